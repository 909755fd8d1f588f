// The OpenFeature web SDK with its OFREP provider, unmodified, against the edgeside at argv[2]:
// a known visitor, then an unknown one, then a poll that revalidates the bulk answer (ETag).
// Prints one JSON line per evaluation; tests/server/ofrep/test_providers.py reads them.
import { OpenFeature } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const [baseUrl, pollMs] = [process.argv[2], Number(process.argv[3] || 200)];
const provider = new OFREPWebProvider({ baseUrl, pollInterval: pollMs });
const show = (who, details) =>
  console.log(JSON.stringify({ who, value: details.value, reason: details.reason,
    variant: details.variant, metadata: details.flagMetadata, error: details.errorCode ?? null }));

const context = (targetingKey) => ({ targetingKey, site: 'shop-fr', hour: 12 });
await OpenFeature.setProviderAndWait(provider, context('c-alice'));
const client = OpenFeature.getClient();
show('known', client.getStringDetails('home_hero', 'fallback'));
await OpenFeature.setContext(context('nobody-seen-before'));
show('unknown', client.getStringDetails('home_hero', 'fallback'));
show('missing', client.getStringDetails('no_such_placement', 'fallback'));
// Let the provider poll a few times: each re-fetch sends If-None-Match.
await new Promise((resolve) => setTimeout(resolve, pollMs * 4));
await OpenFeature.close();

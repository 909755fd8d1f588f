"""The fleet (docs/fleet.md): many nodes behave as one through NATS JetStream and object storage.

- `link`: the node's broker connection, kept up in the background; a node serves without it;
- `live`: events accepted here go out on the live stream; one worker per node applies every other
  node's events to the node's live store, in order, exactly once (the stream position is stored in
  the same LMDB transaction);
- `snapshots`: follows snapshots published to object storage (announcement, pointer poll);
- `status`: heartbeats into a key-value bucket, and the fleet table read from it;
- `node`: the per-worker object the app starts and stops.

Nothing here runs unless `fleet.broker` (or `fleet.snapshots_from`) is set.
"""

-- wrk script for bench.http: varies visitors (cookies from a file), sites and placement sets.
-- usage: wrk ... -s bench/wrk_edge.lua URL -- COOKIE_FILE [edge|pages|decide|repeat|real|realdecide] [N] [SEED]
-- `real` is a realistic population instead of the demo's 350 visitors: N profiles built by
-- bench.gen with SEED (their cookies are k<SEED>-<i in hex>), returning visitors drawn with a long
-- tail over all N, 30 % never seen; one of 20 000 pages per view with its referrer, browser and
-- language, the full Cookie header a browser sends, and the headers a CDN forwards.
-- `realdecide` asks `POST /v1/decide` for the same population (`visitor`), with the page's URL,
-- referrer, language, country and device in `context`: first questions, not the demo's repeats.
-- `pages` is `edge` plus what deploy/nginx forwards on every page view: the page (one of 5 000,
-- Zipf-like), the referrer, the browser and its language.
local cookies = {}
local sets = { "home_hero,home_recs", "home_hero", "article_sidebar,home_hero", "cart_upsell,home_recs,home_hero" }
local sites = { "shop-fr", "shop-de", "shop-uk" }
local languages = { "fr-FR,fr;q=0.9,en;q=0.8", "de-DE,de;q=0.9", "en-GB,en;q=0.9" }
local browsers = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
  "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
}
local mode = "edge"
local n = 0
local population = 0
local seed = "1"
local countries = { "FR", "DE", "GB", "ES", "IT", "NL", "BE" }

function init(args)
  local f = io.open(args[1], "r")
  if f then
    for line in f:lines() do cookies[#cookies + 1] = line end
    f:close()
  end
  if #cookies == 0 then cookies[1] = "anonymous" end
  if args[2] then mode = args[2] end
  if args[3] then population = tonumber(args[3]) end
  if args[4] then seed = args[4] end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
end

function request()
  n = n + 1
  -- Zipf-like skew: a few visitors come back often, many come once.
  local r = math.random()
  local idx = math.floor(#cookies * r * r * r) + 1
  local cookie = cookies[idx]
  if n % 5 == 0 then cookie = "anon-" .. math.random(1, 1000000) end
  local site = sites[(n % #sites) + 1]
  local set = sets[(n % #sets) + 1]
  if mode == "repeat" then
    -- One known visitor asking the same question over and over: every answer a memo hit.
    cookie, site, set = cookies[1], sites[1], sets[1]
  end
  if mode == "real" then return real() end
  if mode == "realdecide" then return realdecide() end
  if mode == "decide" then
    local ps = '"' .. set:gsub(",", '","') .. '"'
    local body = '{"visitor":{"ids":{"cookie":"' .. cookie .. '"}},"context":{"site":"' .. site
      .. '"},"placements":[' .. ps .. ']}'
    return wrk.format("POST", "/v1/decide", { ["Content-Type"] = "application/json" }, body)
  end
  local headers = { ["Cookie"] = "edgeside_id=" .. cookie, ["CF-IPCountry"] = "FR" }
  if mode == "pages" then
    local p = math.random()
    headers["X-Original-URI"] = "/p/" .. (math.floor(5000 * p * p * p) + 1) .. "?ref=" .. n % 7
    headers["Referer"] = "https://" .. site .. ".example/p/" .. math.random(1, 5000)
    headers["User-Agent"] = browsers[math.random(1, #browsers)]
    headers["Accept-Language"] = languages[(n % #sites) + 1]
  end
  return wrk.format("GET", "/v1/edge?site=" .. site .. "&p=" .. set, headers)
end

function real_visitor()
  if math.random() < 0.3 then
    return "anon-" .. math.random(1, 1000000000)  -- never seen
  end
  -- A long tail over the whole population: density ~ 1/sqrt(i), every profile reachable.
  local r = math.random()
  return "k" .. seed .. "-" .. string.format("%x", math.floor(population * r * r))
end

function realdecide()
  local site = sites[math.random(1, #sites)]
  local ps = '"' .. sets[math.random(1, #sets)]:gsub(",", '","') .. '"'
  local p = math.random()
  local page = math.floor(20000 * p * p) + 1
  local locales = { "fr-FR", "de-DE", "en-GB" }
  local devices = { "desktop", "mobile", "tablet" }
  local body = '{"visitor":{"ids":{"cookie":"' .. real_visitor() .. '"}},"context":{"site":"'
    .. site .. '","url":"https://' .. site .. '.example/p/' .. page .. '?utm_source=news&ref='
    .. (n % 7) .. '","referrer":"https://' .. site .. '.example/p/' .. math.random(1, 20000)
    .. '","locale":"' .. locales[math.random(1, #locales)] .. '","device":"'
    .. devices[math.random(1, #devices)] .. '","geo":{"country":"'
    .. countries[math.random(1, #countries)] .. '"}},"placements":[' .. ps .. ']}'
  return wrk.format("POST", "/v1/decide", { ["Content-Type"] = "application/json" }, body)
end

function real()
  local cookie = real_visitor()
  local site = sites[math.random(1, #sites)]
  local set = sets[math.random(1, #sets)]
  local p = math.random()
  local page = math.floor(20000 * p * p) + 1
  local lang = math.random(1, #languages)
  local ga = math.random(100000000, 999999999)
  local headers = {
    ["Cookie"] = "_ga=GA1.2." .. ga .. ".1733300000; _gid=GA1.2." .. (ga % 7919) .. ".1733390000; "
      .. "edgeside_id=" .. cookie .. "; cart=" .. (n % 13) .. "; consent=analytics%3Dyes; "
      .. "session=" .. string.format("%08x%08x", ga, n),
    ["CF-IPCountry"] = countries[math.random(1, #countries)],
    ["X-Original-URI"] = "/p/" .. page .. "?utm_source=news&ref=" .. (n % 7),
    ["Referer"] = "https://" .. site .. ".example/p/" .. math.random(1, 20000),
    ["User-Agent"] = browsers[math.random(1, #browsers)],
    ["Accept-Language"] = languages[lang],
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Encoding"] = "gzip, br",
    ["X-Forwarded-For"] = "203.0." .. (n % 256) .. "." .. math.random(1, 254),
    ["X-Forwarded-Proto"] = "https",
  }
  return wrk.format("GET", "/v1/edge?site=" .. site .. "&p=" .. set, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end

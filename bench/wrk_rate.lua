-- wrk script for bench.load: the traffic mix of wrk_edge.lua, paced per connection.
-- usage (cwd bench/): wrk ... -s wrk_rate.lua URL -- COOKIE_FILE MODE DELAY_MS
-- Each connection waits DELAY_MS before each request, so C connections offer about C*1000/DELAY_MS
-- requests a second (wrk2, with true constant-rate pacing, is not packaged; achieved rates are
-- measured and reported, never assumed).
dofile("wrk_edge.lua")
local edge_init = init
local delay_ms = 0

function init(args)
  edge_init(args)
  delay_ms = tonumber(args[3]) or 0
end

function delay()
  return delay_ms
end

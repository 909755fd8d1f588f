-- edgeside's decision callout for HAProxy ≥ 2.6 as a Lua action on HAProxy's own non-blocking
-- sockets (core.tcp): no extra Lua library. deploy/haproxy/haproxy.cfg calls it:
--
--   http-request lua.edgeside_decide 127.0.0.1:8080
--
-- It asks GET /v1/edge with the inputs edgeside reads, checks the answer, and leaves the decision
-- in three transaction variables for the config to use:
--   txn.edge_key       always set: edgeside's key, or "fallback"
--   txn.edge_decision  set only when edgeside gave a well-formed one
--   txn.edge_fallback  set when defaults were forced (edgeside's reason, or edgeside-unavailable)
--
-- Fail-open: refused, timed out (DECIDE_TIMEOUT_S for connect, send and each read), any status but
-- 204, or a key outside the safe character set ⇒ txn.edge_key = "fallback": the page is still
-- served. A Lua error is caught too.
--
-- Why not core.httpclient (HAProxy's built-in HTTP client, 2.5+): on 2.6 its `timeout` does not
-- bound the call tightly (a decider that accepts and never answers held each page 1.1 to 1.4 s
-- with timeout = 100 or 250 ms, and 7 s with 2000 ms: one measurement, on a busy 2-core machine). A socket with settimeout is
-- bounded, and a 204 with a few headers is all there is to read.

local DECIDE_TIMEOUT_S = 0.25
local MAX_ANSWER_LINES = 64

-- What the proxy accepts from edgeside (the server already restricts these; the proxy checks again).
local KEY_RE = "^[A-Za-z0-9_.:+/=%-]+$"
local DECISION_RE = "^[A-Za-z0-9_.:;=,/+%-]+$"
local FALLBACK_RE = "^[A-Za-z0-9_.:,%-]+$"

-- Context headers passed on as they are, as deploy/nginx does (edgeside bounds and checks them).
local CONTEXT = {
  "x-consent", "cf-ipcountry", "cf-region-code", "cf-ipcity", "cf-timezone",
  "accept-language", "user-agent", "referer",
}

local function well_formed(value, pattern, max)
  return type(value) == "string" and #value >= 1 and #value <= max and value:match(pattern) ~= nil
end

-- Header values go into the request we write ourselves: refuse anything that could end a line.
local function safe_value(value)
  return type(value) == "string" and value ~= "" and not value:find("[%c]") and value or nil
end

local function request_bytes(txn, upstream)
  -- Only these headers go to edgeside: a client's X-Visitor-Id, X-Site, X-Placements, session
  -- cookies or Authorization never do (the request is built from scratch).
  local lines = {
    "GET /v1/edge HTTP/1.0",
    "Host: " .. upstream,
    "X-Original-URI: " .. (safe_value(txn.f:pathq()) or "/"),
    "X-Site: " .. (safe_value(txn:get_var("txn.edge_site")) or ""),
    "X-Placements: " .. (safe_value(txn:get_var("txn.edge_placements")) or ""),
  }
  local cookie = safe_value(txn.f:req_cook("edgeside_id"))
  if cookie and not cookie:find("[;]") then
    lines[#lines + 1] = "Cookie: edgeside_id=" .. cookie
  end
  for _, name in ipairs(CONTEXT) do
    local value = safe_value(txn.f:req_fhdr(name))
    if value then
      lines[#lines + 1] = name .. ": " .. value
    end
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

local function ask(txn, upstream)
  local host, port = upstream:match("^(.+):(%d+)$")
  if not host then
    return nil
  end
  local socket = core.tcp()
  socket:settimeout(DECIDE_TIMEOUT_S)
  local answer = nil
  if socket:connect(host, tonumber(port)) and socket:send(request_bytes(txn, upstream)) then
    local status = socket:receive("*l")
    if status and status:match("^HTTP/1%.[01] 204 ") then
      local headers = {}
      for _ = 1, MAX_ANSWER_LINES do
        local line = socket:receive("*l")
        if line == nil or line == "" then
          break
        end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then
          name = name:lower()
          headers[name] = headers[name] == nil and value or false -- repeated: not trusted
        end
      end
      answer = headers
    end
  end
  socket:close()
  if answer == nil or not well_formed(answer["x-edge-key"], KEY_RE, 64) then
    return nil
  end
  local decision, fallback = answer["x-edge-decision"], answer["x-edge-fallback"]
  return {
    key = answer["x-edge-key"],
    decision = well_formed(decision, DECISION_RE, 1024) and decision or nil,
    fallback = well_formed(fallback, FALLBACK_RE, 128) and fallback or nil,
  }
end

core.register_action("edgeside_decide", { "http-req" }, function(txn, upstream)
  local ok, answer = pcall(ask, txn, upstream)
  if ok and answer ~= nil then
    txn:set_var("txn.edge_key", answer.key)
    if answer.decision then txn:set_var("txn.edge_decision", answer.decision) end
    if answer.fallback then txn:set_var("txn.edge_fallback", answer.fallback) end
  else
    if not ok then core.Warning("edgeside_decide: " .. tostring(answer)) end
    txn:set_var("txn.edge_key", "fallback")
    txn:set_var("txn.edge_fallback", "edgeside-unavailable")
  end
end, 1)

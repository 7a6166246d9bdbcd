-- Checks every stateful throttle rule for one user and atomically records the prompt it grants.
-- All keys belong to one user and share that user's hash tag (Redis Cluster safe).
--
-- KEYS[1] user state hash   neg, lneg, resp, c:<campaign>:n (lifetime), c:<campaign>:t (last)
-- KEYS[2] user day hash     the counted local day, pinned when it starts: start, end (ms), n,
--                           ch:<channel>, c:<campaign>; and the next day, for prompts deferred
--                           into it: the same fields prefixed with "x"
-- KEYS[3] request key       the stored result for a client_request_id (unused without one)
-- KEYS[4] decision record   what ReportOutcome needs about a granted decision
-- KEYS[5] grants list       the effective times (ms) of the user's latest grants
--
-- ARGV[1] now (ms)
-- ARGV[2] start and ARGV[3] end (ms) of the local day of `now` in the request's time zone
-- ARGV[4] TTL margin of the day hash (s)   ARGV[5] TTL of the state hash and grants list (s)
-- ARGV[6] TTL of a decision record (s)     ARGV[7] TTL of a request key (s)
-- ARGV[8] policy JSON   {cap, min, factor, ceil, snooze, adaptive, ch, chcap}; times in ms
-- ARGV[9] candidates JSON, in order of preference:
--         [{c=campaign, a=arm, pd=per-day cap, lt=lifetime cap, mi=campaign interval (ms),
--           p=propensity, da=deliver_at (ms, 0 = now), aw=attribution window (ms), m=metric,
--           ds/de=start/end of the local day of deliver_at when that is a later day (else 0)}]
-- ARGV[10] meta JSON    {id=decision id, req=1 if KEYS[3] is a request key, fp=request
--                        fingerprint, pre=reason when there is no candidate, prec=its campaign,
--                        pren=its next-eligible time (ms)}
-- ARGV[11] echo token   the store's token of this call (see below)
--
-- A prompt is charged at its effective time, when it reaches the user (deliver_at, else now):
-- a push deferred past quiet hours counts against the day and the interval it is delivered in.
--
-- Returns {token, status, result JSON {id, r, c, a, p, n, da, ch, fp}}: status 0 = decided now,
-- 1 = a stored decision for the same request, 3 = the request id was used for another request.
-- n = 0 means "unknown". The token is ARGV[11], echoed so that the store can tell that the reply
-- it reads is its own call's (throttle_store.py).

local now = tonumber(ARGV[1])
local req_start, req_end = tonumber(ARGV[2]), tonumber(ARGV[3])
local day_margin = tonumber(ARGV[4])
local state_ttl = tonumber(ARGV[5])
local decision_ttl = tonumber(ARGV[6])
local request_ttl = tonumber(ARGV[7])
local policy = cjson.decode(ARGV[8])
local candidates = cjson.decode(ARGV[9])
local meta = cjson.decode(ARGV[10])
local token = ARGV[11]
local DAY_MS = 86400000

if meta.req == 1 then
  local previous = redis.call('GET', KEYS[3])
  if previous then
    if cjson.decode(previous).fp ~= meta.fp then
      return {token, 3, previous}
    end
    return {token, 1, previous}
  end
end

local function finish(result)
  result.id = meta.id
  result.ch = policy.ch
  result.fp = meta.fp
  local encoded = cjson.encode(result)
  if meta.req == 1 then
    redis.call('SET', KEYS[3], encoded, 'EX', request_ttl)
  end
  return {token, 0, encoded}
end

-- The counted day is pinned when it starts, so a change of time zone takes effect when the day
-- in progress ends: sending another zone never opens a fresh day early.
local day = redis.call('HMGET', KEYS[2], 'start', 'end', 'xstart', 'xend')
local day_start, day_end = tonumber(day[1]), tonumber(day[2])
local next_start, next_end = tonumber(day[3]), tonumber(day[4])
if not day_start or now < day_start or now >= day_end then
  local fresh = {}
  if next_start and now >= next_start and now < next_end then
    local all = redis.call('HGETALL', KEYS[2])
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 1) == 'x' then
        fresh[#fresh + 1] = string.sub(all[i], 2)
        fresh[#fresh + 1] = all[i + 1]
      end
    end
    day_start, day_end = next_start, next_end
  else
    fresh = {'start', req_start, 'end', req_end}
    day_start, day_end = req_start, req_end
  end
  next_start, next_end = nil, nil
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], unpack(fresh))
  redis.call('EXPIRE', KEYS[2], math.max(0, math.floor((day_end - now) / 1000)) + day_margin)
end

local state = redis.call('HMGET', KEYS[1], 'neg', 'lneg', 'resp')
local neg = tonumber(state[1]) or 0
local last_negative = tonumber(state[2])
local responsiveness = tonumber(state[3]) or 0.5
local grants = redis.call('LRANGE', KEYS[5], 0, -1)

-- Adaptive suppression: a user who mostly ignores prompts gets a smaller daily cap.
local cap = policy.cap
if policy.adaptive == 1 and responsiveness < 0.5 then
  cap = math.max(1, math.floor(policy.cap * responsiveness / 0.5 + 0.5))
end
-- The interval grows by `factor` with each consecutive negative response, up to the ceiling.
local interval = policy.min
if neg > 0 and policy.min > 0 then
  interval = math.min(policy.min * (policy.factor ^ neg), math.max(policy.ceil, policy.min))
end
-- Whatever the days say, never more than two days' worth of prompts in any 24 hours.
local rolling_cap = 2 * policy.cap

-- Checks one candidate at its effective time; returns nil when it passes, else the reason of
-- its first failing rule and when all its failing rules pass (0 = never).
local function check(cand, at, prefix, window_end)
  local reason, next_ok, never = nil, 0, false
  local function fail(why, until_at)
    if reason == nil then reason = why end
    if until_at == 0 then never = true elseif until_at > next_ok then next_ok = until_at end
  end
  if policy.snooze >= 0 and neg >= policy.snooze and last_negative
      and at < last_negative + policy.ceil then
    fail('snoozed', last_negative + policy.ceil)
  end
  local counts = redis.call('HMGET', KEYS[2], prefix .. 'n', prefix .. 'ch:' .. policy.ch,
    prefix .. 'c:' .. cand.c)
  if (tonumber(counts[1]) or 0) >= cap then
    fail('daily_cap', window_end)
  end
  local near, earliest_near, blocked_until = 0, nil, 0
  for _, g in ipairs(grants) do
    local t = tonumber(g)
    if math.abs(at - t) < DAY_MS then
      near = near + 1
      if earliest_near == nil or t < earliest_near then earliest_near = t end
    end
    if math.abs(at - t) < interval and t + interval > blocked_until then
      blocked_until = t + interval
    end
  end
  if near >= rolling_cap then
    fail('daily_cap', earliest_near + DAY_MS)
  end
  if blocked_until > 0 then
    local within_minimum = false
    for _, g in ipairs(grants) do
      if math.abs(at - tonumber(g)) < policy.min then within_minimum = true end
    end
    fail(within_minimum and 'cooldown' or 'backoff', blocked_until)
  end
  if policy.chcap > 0 and (tonumber(counts[2]) or 0) >= policy.chcap then
    fail('channel_cap', window_end)
  end
  if cand.pd > 0 and (tonumber(counts[3]) or 0) >= cand.pd then
    fail('campaign_cap', window_end)
  end
  if cand.lt > 0 then
    local shown_ever = tonumber(redis.call('HGET', KEYS[1], 'c:' .. cand.c .. ':n')) or 0
    if shown_ever >= cand.lt then fail('campaign_cap', 0) end
  end
  if cand.mi > 0 then
    local shown_at = tonumber(redis.call('HGET', KEYS[1], 'c:' .. cand.c .. ':t'))
    if shown_at and math.abs(at - shown_at) < cand.mi then
      fail('campaign_cap', shown_at + cand.mi)
    end
  end
  if never then next_ok = 0 end
  return reason, next_ok
end

if #candidates == 0 then
  local result = {r = meta.pre, c = meta.prec or '', a = '', p = 0, n = 0, da = 0}
  if meta.pre == 'quiet_hours' then
    result.n = meta.pren
  end
  return finish(result)
end

local first_reason, first_campaign, earliest = nil, '', 0
for _, cand in ipairs(candidates) do
  local at = now
  if cand.da > 0 then at = cand.da end
  -- The day the prompt is charged to: today's, or the next day's for a deferred push.
  local prefix, window_end = '', day_end
  if at >= day_end then
    prefix = 'x'
    if not next_start then
      next_start, next_end = cand.ds, cand.de
      if next_start == 0 then next_start, next_end = day_end, day_end + DAY_MS end
    end
    window_end = next_end
  end
  local reason, next_ok = check(cand, at, prefix, window_end)
  if reason == nil then
    if prefix == 'x' then
      redis.call('HSET', KEYS[2], 'xstart', next_start, 'xend', next_end)
    end
    redis.call('HINCRBY', KEYS[2], prefix .. 'n', 1)
    redis.call('HINCRBY', KEYS[2], prefix .. 'ch:' .. policy.ch, 1)
    redis.call('HINCRBY', KEYS[2], prefix .. 'c:' .. cand.c, 1)
    redis.call('EXPIRE', KEYS[2],
      math.max(0, math.floor((math.max(day_end, next_end or 0) - now) / 1000)) + day_margin)
    redis.call('HSET', KEYS[1], 'c:' .. cand.c .. ':t', at)
    redis.call('HINCRBY', KEYS[1], 'c:' .. cand.c .. ':n', 1)
    redis.call('EXPIRE', KEYS[1], state_ttl)
    redis.call('LPUSH', KEYS[5], at)
    redis.call('LTRIM', KEYS[5], 0, math.max(rolling_cap, 4) - 1)
    redis.call('EXPIRE', KEYS[5], state_ttl)
    -- Outcomes and the attribution window count from when the prompt reaches the user.
    redis.call('HSET', KEYS[4], 'c', cand.c, 'a', cand.a, 't', at, 'aw', cand.aw, 'm', cand.m,
      'ch', policy.ch)
    redis.call('EXPIRE', KEYS[4], decision_ttl)
    -- Next eligible: after the interval, and after the day when its cap is now used up.
    local after = at + interval
    local counts = redis.call('HMGET', KEYS[2], prefix .. 'n', prefix .. 'ch:' .. policy.ch)
    if (tonumber(counts[1]) or 0) >= cap and window_end > after then after = window_end end
    if policy.chcap > 0 and (tonumber(counts[2]) or 0) >= policy.chcap and window_end > after then
      after = window_end
    end
    return finish({r = 'ok', c = cand.c, a = cand.a, p = cand.p, n = after, da = cand.da})
  end
  if first_reason == nil then
    first_reason, first_campaign = reason, cand.c
  end
  if next_ok > 0 and (earliest == 0 or next_ok < earliest) then earliest = next_ok end
end

-- Campaign-level reasons name the campaign that would have been chosen.
if first_reason ~= 'campaign_cap' then first_campaign = '' end
return finish({r = first_reason, c = first_campaign, a = '', p = 0, n = earliest, da = 0})

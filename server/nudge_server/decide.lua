-- Checks every stateful throttle rule for one user and atomically records the prompt it grants.
-- All keys belong to one user and share that user's hash tag (Redis Cluster safe).
--
-- KEYS[1] user state hash      last, neg, lneg, resp, c:<campaign>:n, c:<campaign>:t
-- KEYS[2] user day hash        n, ch:<channel>, c:<campaign>     (one per local calendar day)
-- KEYS[3] request key          the stored result for a client_request_id (unused without one)
-- KEYS[4] decision record      what ReportOutcome needs about a granted decision
--
-- ARGV[1] now (ms)                       ARGV[2] end of the user's local day (ms)
-- ARGV[3] TTL of the day hash (s)        ARGV[4] TTL of the state hash (s)
-- ARGV[5] TTL of a decision record (s)   ARGV[6] TTL of a request key (s)
-- ARGV[7] policy JSON   {cap, min, factor, ceil, snooze, adaptive, ch, chcap}; times in ms
-- ARGV[8] candidates JSON, in order of preference:
--         [{c=campaign, a=arm, pd=per-day cap, lt=lifetime cap, mi=campaign interval (ms),
--           p=propensity, da=deliver_at (ms, 0 = now), aw=attribution window (ms), m=metric}]
-- ARGV[9] meta JSON     {id=decision id, req=1 if KEYS[3] is a request key,
--                        pre=reason when there is no candidate, prec=its campaign,
--                        pren=its next-eligible time (ms)}
--
-- Returns {replayed (0/1), result JSON {id, r, c, a, p, n, da, ch}}; n = 0 means "unknown".

local now = tonumber(ARGV[1])
local day_end = tonumber(ARGV[2])
local day_ttl = tonumber(ARGV[3])
local state_ttl = tonumber(ARGV[4])
local decision_ttl = tonumber(ARGV[5])
local request_ttl = tonumber(ARGV[6])
local policy = cjson.decode(ARGV[7])
local candidates = cjson.decode(ARGV[8])
local meta = cjson.decode(ARGV[9])

if meta.req == 1 then
  local previous = redis.call('GET', KEYS[3])
  if previous then
    return {1, previous}
  end
end

local function finish(result)
  local encoded = cjson.encode(result)
  if meta.req == 1 then
    redis.call('SET', KEYS[3], encoded, 'EX', request_ttl)
  end
  return {0, encoded}
end

-- The user's state as it stands.
local state = redis.call('HMGET', KEYS[1], 'last', 'neg', 'lneg', 'resp')
local last = tonumber(state[1])
local neg = tonumber(state[2]) or 0
local last_negative = tonumber(state[3])
local responsiveness = tonumber(state[4]) or 0.5
local day = redis.call('HMGET', KEYS[2], 'n', 'ch:' .. policy.ch)
local day_count = tonumber(day[1]) or 0
local channel_count = tonumber(day[2]) or 0

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

-- Rules that apply to every campaign. The first that fails names the reason; the user becomes
-- eligible again when every failing rule has passed.
local reason = nil
local next_ok = 0
local function fail(why, at)
  if reason == nil then reason = why end
  if at > next_ok then next_ok = at end
end
if policy.snooze >= 0 and neg >= policy.snooze and last_negative
    and now < last_negative + policy.ceil then
  fail('snoozed', last_negative + policy.ceil)
end
if day_count >= cap then
  fail('daily_cap', day_end)
end
if last and now < last + interval then
  if now < last + policy.min then
    fail('cooldown', last + interval)
  else
    fail('backoff', last + interval)
  end
end
if policy.chcap > 0 and channel_count >= policy.chcap then
  fail('channel_cap', day_end)
end

if #candidates == 0 then
  local result = {id = meta.id, r = meta.pre, c = meta.prec or '', a = '', p = 0, n = 0, da = 0}
  if meta.pre == 'quiet_hours' then
    result.n = math.max(meta.pren, next_ok)
  end
  return finish(result)
end

if reason ~= nil then
  return finish({id = meta.id, r = reason, c = '', a = '', p = 0, n = next_ok, da = 0})
end

-- Campaign rules, in order of preference: the first candidate that passes them is granted.
local earliest = 0
for _, cand in ipairs(candidates) do
  local ok = true
  local cand_next = 0
  local never = false
  if cand.pd > 0 then
    local shown_today = tonumber(redis.call('HGET', KEYS[2], 'c:' .. cand.c)) or 0
    if shown_today >= cand.pd then
      ok = false
      cand_next = math.max(cand_next, day_end)
    end
  end
  if cand.lt > 0 then
    local shown_ever = tonumber(redis.call('HGET', KEYS[1], 'c:' .. cand.c .. ':n')) or 0
    if shown_ever >= cand.lt then
      ok = false
      never = true
    end
  end
  if cand.mi > 0 then
    local shown_at = tonumber(redis.call('HGET', KEYS[1], 'c:' .. cand.c .. ':t'))
    if shown_at and now < shown_at + cand.mi then
      ok = false
      cand_next = math.max(cand_next, shown_at + cand.mi)
    end
  end
  if ok then
    redis.call('HINCRBY', KEYS[2], 'n', 1)
    redis.call('HINCRBY', KEYS[2], 'ch:' .. policy.ch, 1)
    redis.call('HINCRBY', KEYS[2], 'c:' .. cand.c, 1)
    redis.call('EXPIRE', KEYS[2], day_ttl)
    redis.call('HSET', KEYS[1], 'last', now, 'c:' .. cand.c .. ':t', now)
    redis.call('HINCRBY', KEYS[1], 'c:' .. cand.c .. ':n', 1)
    redis.call('EXPIRE', KEYS[1], state_ttl)
    redis.call('HSET', KEYS[4], 'c', cand.c, 'a', cand.a, 't', now, 'aw', cand.aw, 'm', cand.m,
      'ch', policy.ch)
    redis.call('EXPIRE', KEYS[4], decision_ttl)
    local after = now + interval
    if day_count + 1 >= cap and day_end > after then after = day_end end
    if policy.chcap > 0 and channel_count + 1 >= policy.chcap and day_end > after then
      after = day_end
    end
    return finish({id = meta.id, r = 'ok', c = cand.c, a = cand.a, p = cand.p, n = after,
      da = cand.da})
  end
  if not never and (earliest == 0 or cand_next < earliest) then earliest = cand_next end
end

return finish({id = meta.id, r = 'campaign_cap', c = candidates[1].c, a = '', p = 0,
  n = earliest, da = 0})

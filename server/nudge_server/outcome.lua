-- Records one outcome of one granted decision, once, and applies it to the user's backoff.
-- All keys belong to one user and share that user's hash tag.
--
-- KEYS[1] user state hash   (see decide.lua)
-- KEYS[2] decision record   c, a, t, aw, m, ch (written by decide.lua); o:<type> per recorded
--                           outcome; pulled / rewarded = the outcome type that counted as the
--                           arm's pull / reward; responded (any response), positive (a tap or
--                           conversion was seen)
--
-- ARGV[1] outcome type (impression, tap, dismiss, conversion, ignore)
-- ARGV[2] outcome time (ms)
-- ARGV[3] weight of the newest response in the responsiveness average (0..1)
-- ARGV[4] TTL of the state hash (s)
-- ARGV[5] echo token: the store's token of this call, returned first (throttle_store.py)
--
-- Returns {token, JSON object {s, c, a, t, aw, pull, reward, late}}. s is one of
--   ok         recorded now;
--   duplicate  recorded before: pull and reward repeat what that first report counted, so a
--              retry can finish the learning a crash interrupted (learning is idempotent);
--   missing    no granted decision with this id for this user (or its record expired);
--   early      the outcome is older than the decision;
--   responded  an ignore arrived after the user had responded: nothing recorded.

local kind = ARGV[1]
local at = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local state_ttl = tonumber(ARGV[4])
local token = ARGV[5]

local rec = redis.call('HMGET', KEYS[2], 'c', 'a', 't', 'aw', 'm', 'o:' .. kind, 'pulled',
  'rewarded', 'positive', 'responded')
if not rec[1] then
  return {token, cjson.encode({s = 'missing'})}
end
local campaign, arm = rec[1], rec[2]
local decided_at, window = tonumber(rec[3]), tonumber(rec[4])
local function reply(status, pull, reward, late)
  return {token, cjson.encode({s = status, c = campaign, a = arm, t = decided_at, aw = window,
    pull = pull, reward = reward, late = late})}
end
if rec[6] then
  return reply('duplicate', rec[7] == kind and 1 or 0, rec[8] == kind and 1 or 0, 0)
end
if at < decided_at then
  return reply('early', 0, 0, 0)
end
if kind == 'ignore' and rec[10] then
  return reply('responded', 0, 0, 0)
end
redis.call('HSET', KEYS[2], 'o:' .. kind, at)

-- Any outcome means the prompt was shown: it is one pull of the arm, counted once.
local pull = 0
if not rec[7] then
  pull = 1
  redis.call('HSET', KEYS[2], 'pulled', kind)
end

-- The campaign's metric within its attribution window is the reward, counted once; a later
-- one is logged but not learned.
local reward = 0
local late = 0
if kind == rec[5] and not rec[8] then
  if at - decided_at <= window then
    reward = 1
    redis.call('HSET', KEYS[2], 'rewarded', kind)
  else
    late = 1
  end
end

-- Backoff and responsiveness: a dismissal or an ignore is negative when it is the first
-- response; a tap or a conversion is positive (once per decision) and resets the backoff.
local positive = (kind == 'tap' or kind == 'conversion')
local negative = (kind == 'dismiss' or kind == 'ignore')
if positive and not rec[9] then
  local resp = tonumber(redis.call('HGET', KEYS[1], 'resp')) or 0.5
  redis.call('HSET', KEYS[1], 'neg', 0, 'resp', resp * (1 - weight) + weight)
  redis.call('HDEL', KEYS[1], 'lneg')
  redis.call('HSET', KEYS[2], 'positive', 1, 'responded', 1)
  redis.call('EXPIRE', KEYS[1], state_ttl)
elseif negative and not rec[10] then
  local resp = tonumber(redis.call('HGET', KEYS[1], 'resp')) or 0.5
  redis.call('HINCRBY', KEYS[1], 'neg', 1)
  redis.call('HSET', KEYS[1], 'lneg', at, 'resp', resp * (1 - weight))
  redis.call('HSET', KEYS[2], 'responded', 1)
  redis.call('EXPIRE', KEYS[1], state_ttl)
end

return reply('ok', pull, reward, late)

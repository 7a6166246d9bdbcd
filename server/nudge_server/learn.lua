-- Adds one decision's pull and/or reward to its campaign's arm statistics, at most once each.
-- Both keys belong to one campaign and share its hash tag.
--
-- KEYS[1] arm statistics hash   <arm>:n (pulls), <arm>:r (rewards)
-- KEYS[2] learned set           members <decision id>:n and <decision id>:r already counted
--
-- ARGV[1] arm   ARGV[2] decision id   ARGV[3] pull (0/1)   ARGV[4] reward (0/1)
-- ARGV[5] TTL of the statistics hash (s)   ARGV[6] TTL of the learned set (s)
-- ARGV[7] echo token: the store's token of this call, returned first (throttle_store.py)
--
-- Returns {token, pulls added, rewards added}.

local arm, decision = ARGV[1], ARGV[2]
local pulls, rewards = 0, 0
if ARGV[3] == '1' and redis.call('SADD', KEYS[2], decision .. ':n') == 1 then
  redis.call('HINCRBY', KEYS[1], arm .. ':n', 1)
  pulls = 1
end
if ARGV[4] == '1' and redis.call('SADD', KEYS[2], decision .. ':r') == 1 then
  redis.call('HINCRBY', KEYS[1], arm .. ':r', 1)
  rewards = 1
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
return {ARGV[7], pulls, rewards}

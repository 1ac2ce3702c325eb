-- One token bucket, taken from atomically (Redis runs a script alone).
--
-- KEYS[1]: the bucket (a hash: tokens, at = last update in ms).
-- ARGV[1]: refill rate in tokens per second; ARGV[2]: burst (capacity).
-- Returns {1, 0} when a token was taken, {0, ms} when none is left, with
-- the milliseconds until one will be.
--
-- Time is the Redis server's clock, so replicas with skewed clocks still
-- share one bucket. Milliseconds keep every stored number within the 14
-- significant digits Redis keeps when it stores a Lua number.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
-- A clock step backwards refills nothing rather than draining the bucket.
local elapsed = math.max(0, now - at) / 1000
tokens = math.min(burst, tokens + elapsed * rate)

local taken = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
-- Once full again the bucket is the same as no bucket: let it expire then,
-- so memory holds only callers active within the last refill time (at
-- most a day, which also keeps the number short enough to pass as is).
local ttl = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 86400000)
redis.call('PEXPIRE', KEYS[1], ttl)
return {taken, wait}

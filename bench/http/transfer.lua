-- wrk script: POST /v1/transfers between random pairs of the pre-created
-- accounts PREFIX0 .. PREFIX(N-1) (funded so that no transfer fails), each
-- request with a unique Idempotency-Key, so every one is a durable write.
--   wrk ... -s bench/http/transfer.lua URL -- ADMIN_KEY N PREFIX CURRENCY RUN_ID
dofile((os.getenv("BENCH_HTTP_DIR") or "bench/http") .. "/report.lua")

local n, prefix, cur, run, auth
local seq = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  auth = "Bearer " .. args[1]
  n = tonumber(args[2])
  prefix = args[3]
  cur = args[4]
  run = args[5]
  math.randomseed((tid or 0) * 7919 + os.time())
end

function request()
  seq = seq + 1
  local from = math.random(0, n - 1)
  local to = math.random(0, n - 2)
  if to >= from then to = to + 1 end
  local body = string.format('{"from":"%s%d","to":"%s%d","amount":%d,"currency":"%s"}',
                             prefix, from, prefix, to, math.random(1, 100), cur)
  return wrk.format("POST", "/v1/transfers", {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. (tid or 0) .. "-" .. seq,
  }, body)
end

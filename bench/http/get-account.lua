-- wrk script: GET /v1/accounts/{id} with the admin bearer key, cycling over
-- the pre-created accounts PREFIX0 .. PREFIX(N-1).
--   wrk ... -s bench/http/get-account.lua URL -- ADMIN_KEY N PREFIX
dofile((os.getenv("BENCH_HTTP_DIR") or "bench/http") .. "/report.lua")

local n, prefix
local i = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  n = tonumber(args[2])
  prefix = args[3]
  i = (tid or 0) * 7919
end

function request()
  i = i + 1
  return wrk.format("GET", "/v1/accounts/" .. prefix .. (i % n))
end

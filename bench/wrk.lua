-- POSTs GraphQL bodies for `polygraph bench`, cycling through the ones the harness
-- wrote (one JSON body per line in BENCH_BODIES), and counts GraphQL errors. With
-- BENCH_AUTHORIZATIONS (one header value per line), body i goes with credential i:
-- many callers, each with its own session.
local bodies = {}
local signed = {}
-- Global, so that done() can read every thread's count with thread:get.
errors = 0
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    local path = os.getenv("BENCH_BODIES")
    for line in io.lines(path) do
        if #line > 0 then
            -- The record separator stands for newlines (NDJSON bodies).
            table.insert(bodies, (line:gsub("\30", "\n")))
        end
    end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
    wrk.headers["Accept"] = "application/graphql-response+json"
    local auth = os.getenv("BENCH_AUTHORIZATION")
    if auth and #auth > 0 then
        wrk.headers["Authorization"] = auth
    end
    local per_body = os.getenv("BENCH_AUTHORIZATIONS")
    if per_body and #per_body > 0 then
        for line in io.lines(per_body) do
            if #line > 0 then
                local headers = {}
                for name, value in pairs(wrk.headers) do
                    headers[name] = value
                end
                headers["Authorization"] = line
                table.insert(signed, headers)
            end
        end
        assert(#signed == #bodies, "BENCH_AUTHORIZATIONS needs one line per body")
    end
    math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
end

function request()
    local i = math.random(#bodies)
    return wrk.format(nil, nil, signed[i], bodies[i])
end

function response(status, headers, body)
    if status ~= 200 or body:find('"errors"', 1, true)
        or body:find('"userErrors":[{', 1, true) then
        errors = errors + 1
    end
end

function done(summary, latency, requests)
    local graphql_errors = 0
    for _, thread in ipairs(threads) do
        graphql_errors = graphql_errors + (thread:get("errors") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,'
        .. '"socket_errors":%d,"status_errors":%d,"graphql_errors":%d}\n',
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(95), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout, e.status, graphql_errors))
end

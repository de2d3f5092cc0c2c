-- The abusive client of `polygraph bench` scenario A1: sends the requests the harness
-- wrote to BENCH_ABUSE ("<header>\t<content type>\t<body>" per line) in turn, as fast
-- as answers come, and counts the answers by what became of the request.
local requests = {}
local next_index = 0
-- Global, so that done() can read every thread's counts with thread:get.
outcomes = {}
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    for line in io.lines(os.getenv("BENCH_ABUSE")) do
        local credential, content_type, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
        if body then
            local headers = {
                ["Content-Type"] = content_type,
                ["Accept"] = "application/graphql-response+json",
            }
            local name, value = credential:match("^([^:]+):%s*(.*)$")
            if name then
                headers[name] = value
            end
            table.insert(requests, wrk.format("POST", nil, headers, body))
        end
    end
end

function request()
    next_index = next_index % #requests + 1
    return requests[next_index]
end

local function outcome(status, body)
    if status == 429 then return "rate_limited" end
    if body:find("QUERY_TOO_COMPLEX", 1, true) then return "too_complex" end
    if status == 401 or body:find("UNAUTHENTICATED", 1, true) then return "bad_credentials" end
    if status == 200 and not body:find('"errors"', 1, true) then return "ran" end
    if status >= 400 and status < 500 then return "malformed" end
    return "other_" .. status
end

function response(status, headers, body)
    local kind = outcome(status, body)
    outcomes[kind] = (outcomes[kind] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for kind, count in pairs(thread:get("outcomes") or {}) do
            total[kind] = (total[kind] or 0) + count
        end
    end
    local parts = {}
    for kind, count in pairs(total) do
        table.insert(parts, string.format('"%s":%d', kind, count))
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_ABUSE {"requests":%d,"duration_us":%d,"socket_errors":%d,"outcomes":{%s}}\n',
        summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
        table.concat(parts, ",")))
end

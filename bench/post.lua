-- wrk: POST a small Responsys trigger body with the token given in the environment
local token = os.getenv("AFTM_TOKEN") or ""
wrk.method = "POST"
wrk.body = '{"recipientData":[{"recipient":{"emailAddress":"bench@example.com","listName":{"folderName":"F","objectName":"L"},"emailFormat":"HTML_FORMAT"},"optionalData":[]}]}'
wrk.headers["Content-Type"] = "application/json"
if token ~= "" then wrk.headers["Authorization"] = token end

done = function(summary, latency, requests)
  io.write(string.format("AFTM-RESULT %d %d %d %d %.1f %.1f %.1f\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean))
end

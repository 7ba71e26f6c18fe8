-- Argo CD health check for mlworkload.io/MLWorkload.
--
-- Installed as resource.customizations.health.mlworkload.io_MLWorkload in argocd-cm (see
-- argocd-cm-patch.yaml, which inlines this file byte for byte). Argo CD sets the global `obj` to
-- the live object and uses the table this chunk returns. Rules, first match wins:
--
--   1. no status, status.observedGeneration older than metadata.generation, or any condition
--      whose observedGeneration is older: Progressing, "waiting for the operator to observe
--      generation N" (every other rule would judge a spec the operator has not seen yet)
--   2. phase Deleting: Progressing (Argo CD already reports any object with a deletionTimestamp
--      as Progressing, "Pending deletion", without running this script)
--   3. Stalled=True: Degraded, "<reason>: <message>" of Stalled (needs a person: quota, stockout,
--      policy, an invalid spec, a failed job)
--   4. phase Failed: Degraded, from Ready, else from status.job
--   5. phase Suspended, or Ready with reason Suspended: Suspended
--   6. phase Succeeded: Healthy (a finished job)
--   7. Ready=True: Healthy, even while Reconciling=True (a RayService upgrade keeps serving)
--   8. otherwise (Reconciling=True, or Ready=False without Stalled): Progressing, Ready's message
--
-- Argo CD runs user-supplied scripts in gopher-lua (Lua 5.1) with only the base, table and os
-- libraries: no string library, so text is built with `..` and tostring. Every field may be
-- absent or of the wrong type; nothing here may raise, since a script error hides the health.

local function field(value, key)
  if type(value) == "table" then
    return value[key]
  end
  return nil
end

-- Generations arrive as numbers, or as strings when Argo CD decoded them as json.Number.
local function generation(value)
  if type(value) == "number" or type(value) == "string" then
    return tonumber(value)
  end
  return nil
end

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function find_condition(conditions, kind)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if type(condition) == "table" and condition.type == kind then
      return condition
    end
  end
  return nil
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True"
end

-- "Reason: message", or whichever of the two is set, or the fallback.
local function describe(condition, fallback)
  local reason = text(field(condition, "reason"))
  local message = text(field(condition, "message"))
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

local function message_of(condition, fallback)
  local message = text(field(condition, "message"))
  if message ~= "" then
    return message
  end
  return fallback
end

local function has_stale_condition(conditions, wanted)
  if type(conditions) ~= "table" then
    return false
  end
  for _, condition in ipairs(conditions) do
    local seen = generation(field(condition, "observedGeneration"))
    if seen ~= nil and seen < wanted then
      return true
    end
  end
  return false
end

local function assess(object)
  local wanted_text = field(field(object, "metadata"), "generation")
  local wanted = generation(wanted_text)
  local status = field(object, "status")
  local waiting = "waiting for the operator to observe generation " .. text(wanted_text)
  if type(status) ~= "table" then
    if wanted == nil then
      return "Progressing", "waiting for the operator to report status"
    end
    return "Progressing", waiting
  end

  local conditions = status.conditions
  if wanted ~= nil then
    local observed = generation(status.observedGeneration)
    if observed == nil or observed < wanted or has_stale_condition(conditions, wanted) then
      return "Progressing", waiting
    end
  end

  local phase = status.phase
  local ready = find_condition(conditions, "Ready")
  if phase == "Deleting" then
    return "Progressing", message_of(ready, "the workload is being deleted")
  end

  local stalled = find_condition(conditions, "Stalled")
  if is_true(stalled) then
    return "Degraded", describe(stalled, "the workload is stalled")
  end

  if phase == "Failed" then
    local job_message = text(field(status.job, "message"))
    if job_message == "" then
      job_message = "the workload failed"
    end
    return "Degraded", describe(ready, job_message)
  end

  if phase == "Suspended" or field(ready, "reason") == "Suspended" then
    return "Suspended", message_of(ready, "the workload is suspended")
  end

  if phase == "Succeeded" then
    return "Healthy", message_of(ready, "the job succeeded")
  end

  if is_true(ready) then
    return "Healthy", message_of(ready, text(phase))
  end

  local fallback = message_of(find_condition(conditions, "Reconciling"), "waiting for the workload to become ready")
  return "Progressing", message_of(ready, fallback)
end

local hs = {}
hs.status, hs.message = assess(obj)
return hs

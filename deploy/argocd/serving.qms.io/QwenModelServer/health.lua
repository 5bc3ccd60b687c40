-- Argo CD health check for serving.qms.io/QwenModelServer (kstatus conditions).
-- The Ready condition is the one authority on health; Reconciling and Stalled
-- only say why it is not Ready yet. Other conditions are ignored: a condition
-- whose "False" is normal must not hold the app in Progressing forever.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the server"
  return hs
end
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
    .. " (observed " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local ready = condition(status.conditions, "Ready")
local stalled = condition(status.conditions, "Stalled")
local reconciling = condition(status.conditions, "Reconciling")

-- A condition computed for an older generation says nothing about this one.
if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil
    and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling, "Reconciling")
  return hs
end
if ready ~= nil and ready.status == "False" then
  -- The operator has acted on this generation and stopped reconciling, yet the
  -- server is not Ready: it lost its serving pods after having progressed.
  hs.status = "Degraded"
  hs.message = text(ready, "Not ready")
  return hs
end
hs.status = "Progressing"
hs.message = text(ready, "Waiting for the Ready condition")
return hs

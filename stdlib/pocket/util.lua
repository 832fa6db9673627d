-- pocket.util: small helpers policies keep rewriting.
local util = {}

-- Splits "a,b, c" into { "a", "b", "c" } (whitespace trimmed, empties dropped).
function util.split(text, sep)
  sep = sep or ","
  local out = {}
  for part in string.gmatch(text, "([^" .. sep .. "]+)") do
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

-- A set from a list: util.set { "GET", "HEAD" }["GET"] == true
function util.set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- The value of one cookie from a Cookie header, or nil.
function util.cookie(header, name)
  if not header then return nil end
  for pair in string.gmatch(header, "[^;]+") do
    local k, v = pair:match("^%s*([^=]+)=(.*)$")
    if k == name then return v end
  end
  return nil
end

-- A value as a load error shows it, its type and (for a plain value) the
-- value itself: `a number (5)`, `a string ("fast")`, `a table`, `nothing
-- (nil)`. The same words as Pocket's own policy checks.
function util.shown(v)
  local t = type(v)
  if t == "number" or t == "boolean" then return string.format("a %s (%s)", t, tostring(v)) end
  if t == "string" then return string.format('a string ("%s")', v) end
  if t == "nil" then return "nothing (nil)" end
  return "a " .. t
end

return util

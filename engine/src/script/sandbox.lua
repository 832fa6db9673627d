-- The Lua side of Pocket's sandbox (see sandbox.rs). It runs once per VM,
-- before the policy, and keeps two promises:
--   * no Lua code runs past its time budget, wherever it runs: every place
--     that catches errors (pcall, xpcall, coroutine.resume/close, load's
--     reader) re-raises the budget error once the budget is spent, and the
--     places where Lua turns its hooks off (finalizers, message handlers,
--     threads the budget error unwound) run no script code;
--   * no native loop a script can size runs unchecked: table.sort always
--     compares through a Lua function (so the instruction hook counts it),
--     table.insert/remove/move loop in Lua, and table.concat/unpack,
--     utf8.* and load check the budget before long native work (string.rep
--     and the string functions: patterns.rs, rep.rs, guarded.rs).
-- The common paths are one extra Lua call; only table.sort with a
-- comparator, xpcall and coroutine.create/wrap allocate a closure.

local spent, over, limits, describe, name_of, hooked = ...

local error, select, type, rawget, tostring = error, select, type, rawget, tostring
local find = string.find
local tointeger, maxinteger = math.tointeger, math.maxinteger
local rawpcall, rawxpcall, rawload = pcall, xpcall, load
local rawsetmetatable, rawcollect = setmetatable, collectgarbage
local co_create, co_wrap = coroutine.create, coroutine.wrap
local co_resume, co_close = coroutine.resume, coroutine.close
local rawsort, rawinsert, rawremove = table.sort, table.insert, table.remove
local rawconcat, rawunpack = table.concat, table.unpack
local u_len, u_offset, u_codepoint, u_char = utf8.len, utf8.offset, utf8.codepoint, utf8.char
local BUDGET, LOAD_MAX, STEP = limits.budget_message, limits.load_max, limits.step

-- Raises the budget error at the caller of the wrapper that calls it.
local function stop() error(BUDGET, 3) end

-- An error value `describe` words anew: Pocket's error objects, and Lua's
-- messages that name `req` (a light userdata Lua calls "userdata").
local function named(e)
  local t = type(e)
  return t == "userdata" or (t == "string" and find(e, "userdata", 1, true) ~= nil)
end

-- After a protected call: once the budget is spent, its error goes on up.
-- An error raised by one of Pocket's functions reaches the script as
-- `path:line: message`, like Lua's own, not as mlua's error object with
-- its traceback.
local function pass(ok, ...)
  if not ok then
    if spent() then error((...), 0) end
    if named(...) then return ok, describe((...)), select(2, ...) end
  end
  return ok, ...
end

pcall = function(f, ...) return pass(rawpcall(f, ...)) end
coroutine.resume = function(co, ...) return pass(co_resume(co, ...)) end
coroutine.close = function(co) return pass(co_close(co)) end

-- Lua calls the message handler before the stack unwinds; for the budget
-- error that is still inside the instruction hook, where Lua's hooks are
-- off, so the handler could loop for ever. Once the budget is spent the
-- handler is skipped.
xpcall = function(f, h, ...)
  if type(h) ~= "function" then return pass(rawxpcall(f, h, ...)) end
  return pass(rawxpcall(f, function(e)
    if spent() then return e end
    if named(e) then e = describe(e) end
    return h(e)
  end, ...))
end

-- The budget error leaves hooks off in the thread it unwinds (Lua turns
-- them back on only where a pcall catches it). A coroutine killed by it
-- would keep them off: its pending __close methods, closed later by
-- coroutine.close, coroutine.wrap or mlua's thread reuse, would run
-- unchecked, and so would whatever mlua ran next in that thread. So every
-- coroutine body runs under a pcall inside its own thread: hooks come back
-- on there, pending __close methods run with them on, and the error then
-- goes on as an ordinary one. Pocket guards the functions it runs as
-- coroutines itself (scripted checks) the same way.
local function rethrow(ok, ...)
  if ok then return ... end
  error((...), 0)
end
local function guard(f)
  return function(...) return rethrow(rawpcall(f, ...)) end
end
-- A coroutine also gets the budget's count hook (`hooked`): a thread takes
-- its hooks from the one that makes it, and on_request runs with the hook
-- off until it runs long (budget_timer.rs).
coroutine.create = function(f)
  if type(f) ~= "function" then return co_create(f) end
  return hooked(co_create(guard(f)))
end
coroutine.wrap = function(f)
  if type(f) ~= "function" then return co_wrap(f) end
  return hooked(co_wrap(guard(f)))
end

-- Text only (a binary chunk can crash the VM), at most LOAD_MAX bytes (the
-- parser runs natively), and an error raised in a reader by the budget is
-- not turned into a quiet `nil, message`.
load = function(chunk, name, mode, ...)
  if type(chunk) == "string" then
    if #chunk > LOAD_MAX then
      return nil, ("chunk of %d bytes is larger than load's limit of %d"):format(#chunk, LOAD_MAX)
    end
  elseif type(chunk) == "function" then
    local reader, total = chunk, 0
    chunk = function()
      local piece = reader()
      if type(piece) == "string" then
        total = total + #piece
        if total > LOAD_MAX then
          error(("chunk larger than load's limit of %d bytes"):format(LOAD_MAX), 0)
        end
      end
      return piece
    end
  end
  local f, err
  if select("#", ...) > 0 then
    f, err = rawload(chunk, name, "t", ...)
  else
    f, err = rawload(chunk, name, "t")
  end
  if f == nil and spent() then error(err, 0) end
  return f, err
end

-- Lua runs __gc finalizers with every hook off, so a finalizer could loop
-- for ever: a table may not get one. (Pocket's own objects have theirs.)
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc is not allowed in a policy (finalizers run outside the time budget)", 2)
  end
  -- Lua's own message would name this wrapper and its line: say it at
  -- the caller's line, in the docs' words.
  if type(t) ~= "table" then
    error("bad argument #1 to 'setmetatable': expected a table, got " .. name_of(t), 2)
  end
  if mt ~= nil and type(mt) ~= "table" then
    error("bad argument #2 to 'setmetatable': expected a table or nil, got " .. name_of(mt), 2)
  end
  return rawsetmetatable(t, mt)
end

-- The string metatable is shared by every string of the VM, the stdlib's
-- included: it cannot be read or changed.
getmetatable("").__metatable = false

-- A full collection takes time in proportion to the heap and runs natively;
-- Pocket collects on its own schedule (the incremental collector, a full
-- collection every 1024 calls of the hooks other than on_request, and after
-- a runaway call). "count" is kept; "collect" and "step" do nothing.
collectgarbage = function(opt, ...)
  if opt == "count" then return rawcollect("count") end
  if opt == nil or opt == "collect" then return 0 end
  if opt == "step" then return false end
  if opt == "isrunning" then return true end
  error(("collectgarbage: option '%s' is not available (Pocket runs the collector)"):format(tostring(opt)), 2)
end

local function checkint(v, arg, fname)
  local i = tointeger(v)
  if i == nil then
    error(("bad argument #%d to '%s' (number has no integer representation)"):format(arg, fname), 3)
  end
  return i
end

local function checktable(t, fname)
  if type(t) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(t)), 3)
  end
end

-- Lua's quicksort, but every comparison is a Lua call, which the
-- instruction hook counts (a native comparison of a huge table, or a native
-- comparator such as rawequal, would not be).
local function lt(a, b) return a < b end
table.sort = function(t, comp)
  if comp == nil then return rawsort(t, lt) end
  if type(comp) ~= "function" then return rawsort(t, comp) end
  return rawsort(t, function(a, b) return comp(a, b) end)
end

-- Appending is native (one step); inserting in the middle shifts in Lua.
table.insert = function(t, ...)
  if select("#", ...) ~= 2 or type(t) ~= "table" then return rawinsert(t, ...) end
  local pos, v = ...
  local e = #t + 1
  pos = checkint(pos, 2, "insert")
  if pos < 1 or pos > e then
    error("bad argument #2 to 'insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do t[i] = t[i - 1] end
  t[pos] = v
end

-- Removing the last element is native; any other position shifts in Lua.
table.remove = function(t, ...)
  if select("#", ...) == 0 or type(t) ~= "table" then return rawremove(t, ...) end
  local size = #t
  local pos = checkint((...), 2, "remove")
  if pos ~= size and (pos < 1 or pos > size + 1) then
    error("bad argument #2 to 'remove' (position out of bounds)", 2)
  end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end

-- table.move in Lua: `table.move({}, 1, 1e12, 1)` is a loop the hook sees.
table.move = function(a1, f, e, t, a2)
  if a2 == nil then a2 = a1 end
  checktable(a1, "move")
  if type(a2) ~= "table" then
    error(("bad argument #5 to 'move' (table expected, got %s)"):format(type(a2)), 2)
  end
  f, e, t = checkint(f, 2, "move"), checkint(e, 3, "move"), checkint(t, 4, "move")
  if e >= f then
    if not (f > 0 or e < maxinteger + f) then
      error("bad argument #3 to 'move' (too many elements to move)", 2)
    end
    if t > maxinteger - (e - f) then
      error("bad argument #4 to 'move' (destination wrap around)", 2)
    end
    if t > e or t <= f or a1 ~= a2 then
      for i = 0, e - f do a2[t + i] = a1[f + i] end
    else
      for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
    end
  end
  return a2
end

-- Long lists are joined STEP elements at a time, with a budget check
-- between steps.
table.concat = function(list, sep, i, j)
  checktable(list, "concat")
  i = i == nil and 1 or checkint(i, 3, "concat")
  j = j == nil and #list or checkint(j, 4, "concat")
  local n = j - i
  if i > j or (n >= 0 and n < STEP) then return rawconcat(list, sep, i, j) end
  local pieces, k = {}, 0
  for from = i, j, STEP do
    if over() then stop() end
    local last = from + (STEP - 1)
    if last > j or last < from then last = j end
    k = k + 1
    pieces[k] = rawconcat(list, sep, from, last)
  end
  return rawconcat(pieces, sep)
end

-- At most a million values (Lua's stack), fetched natively: a budget check
-- first when there are many.
table.unpack = function(list, i, j)
  if i == nil then i = 1 end
  if j == nil and type(list) == "table" then j = #list end
  if type(i) == "number" and type(j) == "number" and j - i >= STEP and over() then stop() end
  return rawunpack(list, i, j)
end

-- Each of these walks its whole string natively.
local function walk(native)
  return function(s, ...)
    if type(s) == "string" and #s > STEP and over() then stop() end
    return native(s, ...)
  end
end
utf8.len, utf8.offset, utf8.codepoint = walk(u_len), walk(u_offset), walk(u_codepoint)
utf8.char = function(...)
  if select("#", ...) > STEP and over() then stop() end
  return u_char(...)
end

print = function(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  pocket.log.info(rawconcat(parts, "\t"))
end

return guard

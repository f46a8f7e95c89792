"""A small Windows PowerShell 5.1 interpreter for the WinRM test peer. NOT PowerShell.

It tokenizes, parses and evaluates the subset of the language a Hyper-V management script
uses: statements separated by newlines or `;`, assignments, `if`/`elseif`/`else`, `exit`,
pipelines, `$variables` with `.Member`, `.Method()` and `[index]`, `@(...)`, `(...)`,
`@{...}` hashtables, `{...}` script blocks, single-quoted strings (all four quote characters,
doubled to escape), double-quoted strings without expansion, integers, `+`, the comparison
operators `-eq -ne -gt -lt -ge -le` (case-insensitive, the right side converted to the left
side's type), `[Type]::Member` for the few types below, and the cmdlets Select-Object,
ConvertTo-Json, Write-Error plus whatever the host model registers (Get-VM, Start-VM...).

Anything else is refused with an error naming what was not understood (raised as
`Unsupported`, reported by the peer as a PowerShell ParserError and logged), never guessed:
a script the adapter sends that this interpreter cannot read fails the test.

Errors follow PowerShell's rules: a cmdlet error is terminating under
`$ErrorActionPreference = 'Stop'` (or `-ErrorAction Stop`), dropped under
`SilentlyContinue`, and otherwise written to the error stream while the script goes on.
"""

import json
import re

QUOTES = "'\u2018\u2019\u201a\u201b"
COMPARISONS = {"-eq", "-ne", "-gt", "-lt", "-ge", "-le"}
KEYWORDS = {"if", "elseif", "else", "exit"}


class Unsupported(Exception):
    """A construct this interpreter does not implement."""


class PsError(Exception):
    """A terminating error: the lines of PowerShell's default error view."""

    def __init__(self, lines):
        super().__init__(lines[0] if lines else "")
        self.lines = lines


class Exit(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code
        self.output = []  # what the script wrote before it exited


# ---------------------------------------------------------------- tokens

class Tok:
    __slots__ = ("kind", "value", "line", "col", "space")

    def __init__(self, kind, value, line, col, space):
        self.kind, self.value, self.line, self.col, self.space = kind, value, line, col, space

    def __repr__(self):
        return f"{self.kind}:{self.value!r}@{self.line}:{self.col}"


def tokenize(src):
    toks = []
    i, line, line_start = 0, 1, 0
    n = len(src)
    space = True
    while i < n:
        c = src[i]
        col = i - line_start + 1
        if c in " \t":
            i += 1
            space = True
            continue
        if c == "\r" and src[i + 1:i + 2] == "\n":
            i += 1
            continue
        if c == "\n":
            toks.append(Tok("NL", "\n", line, col, space))
            i += 1
            line += 1
            line_start = i
            space = True
            continue
        if c == "#":
            raise Unsupported(f"comment at line {line} char {col}")
        if c in QUOTES:
            out = []
            i += 1
            while True:
                if i >= n:
                    raise Unsupported(f"unterminated string at line {line} char {col}")
                if src[i] in QUOTES:
                    if i + 1 < n and src[i + 1] in QUOTES:
                        out.append(src[i])
                        i += 2
                        continue
                    i += 1
                    break
                if src[i] == "\n":
                    raise Unsupported(f"multi-line string at line {line} char {col}")
                out.append(src[i])
                i += 1
            toks.append(Tok("STR", "".join(out), line, col, space))
        elif c == '"':
            out = []
            i += 1
            while True:
                if i >= n or src[i] == "\n":
                    raise Unsupported(f"unterminated string at line {line} char {col}")
                if src[i] == '"':
                    if src[i + 1:i + 2] == '"':
                        out.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                if src[i] in "$`":
                    raise Unsupported(f"expansion or escape in a double-quoted string at line {line} char {col}")
                out.append(src[i])
                i += 1
            toks.append(Tok("STR", "".join(out), line, col, space))
        elif c == "$":
            m = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)").match(src, i)
            if not m:
                raise Unsupported(f"variable syntax at line {line} char {col}")
            toks.append(Tok("VAR", m.group(1), line, col, space))
            i = m.end()
        elif c == "@" and src[i + 1:i + 2] in ("(", "{"):
            toks.append(Tok("@" + src[i + 1], "@" + src[i + 1], line, col, space))
            i += 2
        elif c == "-" and i + 1 < n and src[i + 1].isalpha():
            m = re.compile(r"-[A-Za-z][A-Za-z0-9]*").match(src, i)
            toks.append(Tok("DASH", m.group(0), line, col, space))
            i = m.end()
        elif c.isdigit():
            m = re.compile(r"[0-9]+").match(src, i)
            if m.end() < n and (src[m.end()].isalpha() or src[m.end()] == "."):
                raise Unsupported(f"number syntax at line {line} char {col}")
            toks.append(Tok("NUM", int(m.group(0)), line, col, space))
            i = m.end()
        elif c.isalpha() or c == "_":
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*").match(src, i)
            toks.append(Tok("WORD", m.group(0), line, col, space))
            i = m.end()
        elif src.startswith("::", i):
            toks.append(Tok("::", "::", line, col, space))
            i += 2
        elif c in "()[]{}|;,.=+":
            toks.append(Tok(c, c, line, col, space))
            i += 1
        else:
            raise Unsupported(f"character {c!r} at line {line} char {col}")
        space = False
    toks.append(Tok("EOF", None, line, i - line_start + 1, True))
    return toks


# ---------------------------------------------------------------- parser (tuples as nodes)

class Parser:
    def __init__(self, src):
        self.src_lines = src.split("\n")
        self.toks = tokenize(src)
        self.i = 0

    def peek(self, k=0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, kind):
        t = self.next()
        if t.kind != kind:
            raise Unsupported(f"expected {kind!r}, found {t.value!r} at line {t.line} char {t.col}")
        return t

    def skip_nl(self):
        while self.peek().kind == "NL":
            self.i += 1

    def script(self):
        body = self.statements(("EOF",))
        self.expect("EOF")
        return body

    def statements(self, ends):
        out = []
        while True:
            while self.peek().kind in ("NL", ";"):
                self.i += 1
            if self.peek().kind in ends:
                return out
            out.append(self.statement())
            if self.peek().kind not in ("NL", ";") + tuple(ends):
                t = self.peek()
                raise Unsupported(f"unexpected {t.value!r} at line {t.line} char {t.col}")

    def statement(self):
        t = self.peek()
        if t.kind == "WORD" and t.value.lower() == "if":
            return self.if_statement()
        if t.kind == "WORD" and t.value.lower() == "exit":
            self.next()
            value = None
            if self.peek().kind not in ("NL", ";", "}", "EOF"):
                value = self.expression()
            return ("exit", value, t)
        if t.kind == "WORD" and t.value.lower() in KEYWORDS:
            raise Unsupported(f"'{t.value}' without 'if' at line {t.line} char {t.col}")
        if t.kind == "VAR" and self.peek(1).kind == "=":
            self.next()
            self.next()
            return ("assign", t.value, self.pipeline(), t)
        return self.pipeline()

    def block(self):
        self.expect("{")
        body = self.statements(("}",))
        self.expect("}")
        return body

    def if_statement(self):
        clauses = []
        t = self.next()  # if
        while True:
            self.expect("(")
            cond = self.pipeline()
            self.expect(")")
            self.skip_nl()
            clauses.append((cond, self.block()))
            save = self.i
            self.skip_nl()
            nxt = self.peek()
            if nxt.kind == "WORD" and nxt.value.lower() == "elseif":
                self.next()
                continue
            if nxt.kind == "WORD" and nxt.value.lower() == "else":
                self.next()
                self.skip_nl()
                return ("if", clauses, self.block(), t)
            self.i = save
            return ("if", clauses, None, t)

    def pipeline(self):
        first = self.peek()
        elems = [self.command_or_expression()]
        while self.peek().kind == "|":
            self.next()
            self.skip_nl()
            if self.peek().kind != "WORD":
                t = self.peek()
                raise Unsupported(f"expression after '|' at line {t.line} char {t.col}")
            elems.append(self.command())
        return ("pipeline", elems, first)

    def command_or_expression(self):
        t = self.peek()
        if t.kind == "WORD" and t.value.lower() not in KEYWORDS:
            return self.command()
        return self.expression()

    def command(self):
        name = self.expect("WORD")
        args = []
        while self.peek().kind not in ("NL", ";", "|", ")", "}", "EOF"):
            t = self.peek()
            if t.kind == "DASH":
                self.next()
                args.append(("param", t.value[1:], t))
            else:
                args.append(("value", self.argument(), t))
        line = self.src_lines[name.line - 1] if name.line <= len(self.src_lines) else ""
        return ("command", name.value, args, name, line)

    def argument(self):
        """A command argument: an operand, or several separated by commas (an array)."""
        items = [self.operand(bare_words=True)]
        while self.peek().kind == ",":
            self.next()
            items.append(self.operand(bare_words=True))
        return items[0] if len(items) == 1 else ("array", items)

    def expression(self):
        left = self.additive()
        while self.peek().kind == "DASH" and self.peek().value.lower() in COMPARISONS:
            op = self.next().value.lower()
            left = ("compare", op, left, self.additive())
        if self.peek().kind == "DASH":
            t = self.peek()
            raise Unsupported(f"operator {t.value} at line {t.line} char {t.col}")
        return left

    def additive(self):
        left = self.operand()
        while self.peek().kind == "+":
            self.next()
            left = ("add", left, self.operand())
        return left

    def operand(self, bare_words=False):
        t = self.next()
        if t.kind == "STR":
            node = ("const", t.value)
        elif t.kind == "NUM":
            node = ("const", t.value)
        elif t.kind == "VAR":
            node = ("var", t.value)
        elif t.kind == "(":
            self.skip_nl()
            node = ("paren", self.pipeline())
            self.skip_nl()
            self.expect(")")
        elif t.kind == "@(":
            node = ("subexpr", self.statements((")",)))
            self.expect(")")
        elif t.kind == "@{":
            node = self.hashtable()
        elif t.kind == "{":
            node = ("scriptblock", self.statements(("}",)))
            self.expect("}")
        elif t.kind == "[" and self.peek().kind == "WORD" and self.peek(1).kind == "]" and self.peek(2).kind == "::":
            type_name = self.next().value
            self.next()
            self.next()
            member = self.expect("WORD").value
            node = ("static", type_name, member)
            if self.peek().kind == "(" and not self.peek().space:
                node = ("staticcall", type_name, member, self.call_args())
        elif t.kind == "WORD" and bare_words:
            node = ("const", t.value)
        else:
            raise Unsupported(f"unexpected {t.value!r} at line {t.line} char {t.col}")
        # Postfix: .Member, .Method(...), [index] -- written without spaces before them.
        while True:
            p = self.peek()
            if p.kind == "." and not p.space:
                self.next()
                member = self.expect("WORD").value
                if self.peek().kind == "(" and not self.peek().space:
                    node = ("call", node, member, self.call_args())
                else:
                    node = ("member", node, member)
            elif p.kind == "[" and not p.space:
                self.next()
                index = self.expression()
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def call_args(self):
        self.expect("(")
        args = []
        if self.peek().kind != ")":
            args.append(self.expression())
            while self.peek().kind == ",":
                self.next()
                args.append(self.expression())
        self.expect(")")
        return args

    def hashtable(self):
        entries = []
        while True:
            while self.peek().kind in ("NL", ";"):
                self.next()
            t = self.next()
            if t.kind == "}":
                return ("hashtable", entries)
            if t.kind not in ("WORD", "STR"):
                raise Unsupported(f"hashtable key {t.value!r} at line {t.line} char {t.col}")
            self.expect("=")
            entries.append((t.value, self.pipeline()))
            if self.peek().kind not in ("NL", ";", "}"):
                p = self.peek()
                raise Unsupported(f"unexpected {p.value!r} in a hashtable at line {p.line} char {p.col}")


# ---------------------------------------------------------------- values

class ScriptBlock:
    def __init__(self, body):
        self.body = body


class Hashtable(dict):
    """@{...}: keys compared case-insensitively (stored with their first spelling)."""

    def lookup(self, key):
        for k, v in self.items():
            if k.lower() == key.lower():
                return True, v
        return False, None


class PSObject:
    """An object with named properties and methods (what cmdlets return)."""

    type_name = "System.Object"

    def get(self, name):
        raise Unsupported(f"property '{name}' of {self.type_name}")

    def call(self, name, args):
        if name.lower() == "tostring" and not args:
            return self.to_string()
        raise Unsupported(f"method '{name}' of {self.type_name}")

    def to_string(self):
        return self.type_name


class CustomObject(PSObject):
    """[PSCustomObject] (what Select-Object makes): ordered properties."""

    type_name = "System.Management.Automation.PSCustomObject"

    def __init__(self, props):
        self.props = props

    def get(self, name):
        for k, v in self.props:
            if k.lower() == name.lower():
                return v
        return None


class Enum(PSObject):
    """A .NET enum value: compares and concatenates by name, serialises as its number."""

    def __init__(self, type_name, value, names):
        self.type_name, self.value, self.names = type_name, value, names

    @property
    def name(self):
        return self.names.get(self.value, str(self.value))

    def to_string(self):
        return self.name

    def from_string(self, s):
        for v, n in self.names.items():
            if n.lower() == s.lower():
                return v
        raise PsError([f"Cannot convert value \"{s}\" to type \"{self.type_name}\". Error: \"Unable to match the "
                       f"identifier name {s} to a valid enumerator name.\"",
                       "    + CategoryInfo          : InvalidArgument: (:) [], RuntimeException",
                       "    + FullyQualifiedErrorId : InvalidCastFromStringToEnum", " "])


class Guid(PSObject):
    type_name = "System.Guid"

    def __init__(self, text):
        self.text = text.lower()

    def to_string(self):
        return self.text


class Version(PSObject):
    type_name = "System.Version"

    def __init__(self, text):
        self.text = text

    def to_string(self):
        return self.text


def type_of(v):
    if v is None:
        return "$null"
    if isinstance(v, bool):
        return "System.Boolean"
    if isinstance(v, int):
        return "System.Int64"
    if isinstance(v, str):
        return "System.String"
    if isinstance(v, list):
        return "System.Object[]"
    if isinstance(v, Hashtable):
        return "System.Collections.Hashtable"
    if isinstance(v, ScriptBlock):
        return "System.Management.Automation.ScriptBlock"
    return v.type_name


def as_string(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, str)):
        return str(v)
    if isinstance(v, PSObject):
        return v.to_string()
    if isinstance(v, list):
        return " ".join(as_string(x) for x in v)
    raise Unsupported(f"conversion of {type_of(v)} to a string")


def as_int(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, str) and re.fullmatch(r"\s*-?[0-9]+\s*", v):
        return int(v)
    raise PsError([f"Cannot convert value \"{as_string(v)}\" to type \"System.Int64\".",
                   "    + CategoryInfo          : InvalidArgument: (:) [], RuntimeException",
                   "    + FullyQualifiedErrorId : InvalidCastFromStringToInteger", " "])


def truthy(v):
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    if isinstance(v, str):
        return v != ""
    if isinstance(v, list):
        if len(v) == 0:
            return False
        return truthy(v[0]) if len(v) == 1 else True
    return True


def compare(op, left, right):
    if isinstance(left, list):
        raise Unsupported(f"{op} with an array on the left (a filter)")
    if isinstance(left, Enum):
        right = left.from_string(right) if isinstance(right, str) else as_int(right)
        left = left.value
    elif isinstance(left, bool):
        right = truthy(right)
    elif isinstance(left, int):
        right = as_int(right)
    elif isinstance(left, str):
        left, right = left.lower(), as_string(right).lower()
    elif left is None:
        return {"-eq": right is None, "-ne": right is not None}.get(op, False)
    else:
        raise Unsupported(f"{op} on {type_of(left)}")
    return {"-eq": left == right, "-ne": left != right, "-gt": left > right, "-lt": left < right,
            "-ge": left >= right, "-le": left <= right}[op]


def wildcard_escape(s):
    """[WildcardPattern]::Escape: a backtick before each of * ? [ ] and backtick."""
    return re.sub(r"([*?\[\]`])", r"`\1", s)


def wildcard_regex(pattern):
    """A PowerShell wildcard pattern as a case-insensitive regular expression."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "`" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise Unsupported(f"wildcard pattern {pattern!r}")
            out.append("[" + re.escape(pattern[i + 1:j]) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE | re.DOTALL)


def has_wildcards(pattern):
    return bool(re.search(r"(?<!`)[*?\[]", pattern))


def unescape_wildcards(pattern):
    return re.sub(r"`(.)", r"\1", pattern)


def to_json(v, depth, max_depth):
    """ConvertTo-Json of Windows PowerShell 5.1 (enums as numbers; past -Depth, ToString())."""
    if v is None:
        return None
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, (Guid, Version)):
        raise Unsupported(f"ConvertTo-Json of a {v.type_name} (5.1 writes its properties)")
    if depth > max_depth:
        return as_string(v)
    if isinstance(v, list):
        return [to_json(x, depth + 1, max_depth) for x in v]
    if isinstance(v, Hashtable):
        return {str(k): to_json(x, depth + 1, max_depth) for k, x in v.items()}
    if isinstance(v, CustomObject):
        return {k: to_json(x, depth + 1, max_depth) for k, x in v.props}
    raise Unsupported(f"ConvertTo-Json of a {type_of(v)}")


# ---------------------------------------------------------------- evaluation

class Command:
    """What a cmdlet implementation gets: its bound parameters and where it was called."""

    def __init__(self, interp, name, params, node):
        self.interp, self.name, self.params = interp, name, params
        self.token, self.source_line = node[3], node[4]

    def error(self, lines):
        """Reports a cmdlet error the way -ErrorAction / $ErrorActionPreference say."""
        pref = self.params.get("ErrorAction")
        pref = as_string(pref) if pref is not None else as_string(self.interp.variables.get("erroractionpreference"))
        pref = pref.lower() or "continue"
        if pref == "silentlycontinue" or pref == "ignore":
            return
        if pref == "stop":
            raise PsError(lines)
        if pref == "continue":
            self.interp.errors.extend(lines)
            return
        raise Unsupported(f"ErrorAction {pref}")


class Interpreter:
    """Runs one script. `cmdlets` maps a lower-case name to (fn, switches, value_params,
    positional): fn(cmd, input_objects) returns a list of output objects; `positional` names
    the parameters bare arguments bind to, in order."""

    def __init__(self, cmdlets, variables=None, statics=None):
        self.cmdlets = dict(BUILTINS)
        self.cmdlets.update(cmdlets)
        self.variables = {"erroractionpreference": "Continue", "progresspreference": "Continue",
                          "null": None, "true": True, "false": False}
        self.variables.update(AUTOMATIC)
        for k, v in (variables or {}).items():
            self.variables[k.lower()] = v
        self.statics = dict(STATICS)
        self.statics.update(statics or {})
        self.output = []
        self.errors = []
        self.warnings = []

    def run(self, src):
        """Returns the exit code; output in self.output, errors raised as PsError."""
        body = Parser(src).script()
        try:
            self.output.extend(self.statements(body))
        except Exit as e:
            self.output.extend(e.output)
            return e.code
        return 1 if self.errors else 0

    def statement(self, node):
        kind = node[0]
        if kind == "assign":
            self.variables[node[1].lower()] = self.value_of(node[2])
            return []
        if kind == "if":
            for cond, body in node[1]:
                if truthy(collapse(self.pipeline(cond))):
                    return self.statements(body)
            return self.statements(node[2]) if node[2] is not None else []
        if kind == "exit":
            raise Exit(as_int(self.expr(node[1])) if node[1] is not None else 0)
        if kind == "pipeline":
            return self.pipeline(node)
        raise Unsupported(f"statement {kind}")

    def value_of(self, pipeline):
        """A pipeline used as a value: a lone expression is its value as it is (`$a = @(1)`
        stays an array), a command pipeline's output collapses (none: $null, one: itself)."""
        elems = pipeline[1]
        if len(elems) == 1 and elems[0][0] != "command":
            return self.expr(elems[0])
        return collapse(self.pipeline(pipeline))

    def statements(self, body):
        out = []
        try:
            for stmt in body:
                out.extend(self.statement(stmt))
        except Exit as e:
            e.output = out + e.output
            raise
        return out

    def pipeline(self, node):
        elems = node[1]
        first = elems[0]
        if first[0] == "command":
            objs = self.command(first, [])
        else:
            objs = enumerate_value(self.expr(first))
        for elem in elems[1:]:
            objs = self.command(elem, objs)
        return objs

    def command(self, node, input_objs):
        _, name, args, tok, _line = node
        entry = self.cmdlets.get(name.lower())
        if entry is None:
            raise Unsupported(f"command '{name}' at line {tok.line} char {tok.col}")
        fn, switches, value_params, positional = entry
        known = {p.lower(): p for p in list(switches) + list(value_params) + ["ErrorAction"]}
        params = {}
        positional = list(positional)
        i = 0
        while i < len(args):
            kind, value, t = args[i]
            if kind != "param":
                if not positional:
                    raise Unsupported(f"positional argument to {name} at line {t.line} char {t.col}")
                pname = positional.pop(0)
                if pname in params:
                    raise Unsupported(f"{pname} of {name} given by name and by position")
                params[pname] = self.expr(value)
                i += 1
                continue
            pname = known.get(value.lower())
            if pname is None:
                raise Unsupported(f"parameter -{value} of {name} at line {t.line} char {t.col}")
            if pname in params:
                raise Unsupported(f"-{value} given twice to {name}")
            if pname in switches:
                params[pname] = True
                i += 1
                continue
            if i + 1 >= len(args) or args[i + 1][0] != "value":
                raise Unsupported(f"-{value} of {name} without a value at line {t.line} char {t.col}")
            params[pname] = self.expr(args[i + 1][1])
            i += 2
        return list(fn(Command(self, name, params, node), input_objs))

    def expr(self, node):
        kind = node[0]
        if kind == "const":
            return node[1]
        if kind == "var":
            name = node[1].lower()
            if name not in self.variables:
                raise Unsupported(f"variable ${node[1]} is not set (strict reading)")
            return self.variables[name]
        if kind == "paren":
            return self.value_of(node[1])
        if kind == "subexpr":
            return list(self.statements(node[1]))
        if kind == "array":
            return [self.expr(x) for x in node[1]]
        if kind == "hashtable":
            h = Hashtable()
            for key, value in node[1]:
                if h.lookup(key)[0]:
                    raise Unsupported(f"duplicate hashtable key {key}")
                h[key] = self.value_of(value)
            return h
        if kind == "scriptblock":
            return ScriptBlock(node[1])
        if kind == "compare":
            return compare(node[1], self.expr(node[2]), self.expr(node[3]))
        if kind == "add":
            left, right = self.expr(node[1]), self.expr(node[2])
            if isinstance(left, str):
                return left + as_string(right)
            if isinstance(left, int) and not isinstance(left, bool):
                return left + as_int(right)
            raise Unsupported(f"+ on {type_of(left)}")
        if kind == "member":
            return self.member(self.expr(node[1]), node[2])
        if kind == "call":
            target = self.expr(node[1])
            args = [self.expr(a) for a in node[3]]
            if isinstance(target, PSObject):
                return target.call(node[2], args)
            if isinstance(target, (str, int)) and node[2].lower() == "tostring" and not args:
                return as_string(target)
            raise Unsupported(f"method {node[2]} of {type_of(target)}")
        if kind == "index":
            target, index = self.expr(node[1]), self.expr(node[2])
            if not isinstance(target, list):
                raise Unsupported(f"indexing a {type_of(target)}")
            i = as_int(index)
            return target[i] if -len(target) <= i < len(target) else None
        if kind in ("static", "staticcall"):
            key = (node[1].lower(), node[2].lower())
            fn = self.statics.get(key)
            if fn is None:
                raise Unsupported(f"[{node[1]}]::{node[2]}")
            args = [self.expr(a) for a in node[3]] if kind == "staticcall" else None
            return fn(args)
        raise Unsupported(f"expression {kind}")

    def member(self, target, name):
        if isinstance(target, list):
            if name.lower() in ("count", "length"):
                return len(target)
            raise Unsupported(f"member enumeration .{name} of an array")
        if target is None:
            return None
        if isinstance(target, PSObject):
            return target.get(name)
        if isinstance(target, Hashtable):
            found, value = target.lookup(name)
            return value if found else None
        if isinstance(target, str) and name.lower() == "length":
            return len(target)
        raise Unsupported(f"property {name} of {type_of(target)}")

    def invoke(self, block, dollar_underscore):
        saved = self.variables.get("_", Ellipsis)
        self.variables["_"] = dollar_underscore
        try:
            return collapse(self.statements(block.body))
        finally:
            if saved is Ellipsis:
                del self.variables["_"]
            else:
                self.variables["_"] = saved


def enumerate_value(v):
    """What an expression sends down a pipeline: arrays are unrolled, $null is nothing... but
    a lone $null expression still is one object, as in PowerShell."""
    if isinstance(v, list):
        return list(v)
    return [v]


def collapse(objs):
    """A pipeline's output as a value: nothing is $null, one object is itself, more an array."""
    if len(objs) == 0:
        return None
    if len(objs) == 1:
        return objs[0]
    return list(objs)


# ---------------------------------------------------------------- built-in cmdlets

def select_object(cmd, objs):
    props = cmd.params.get("Property")
    if props is None:
        raise Unsupported("Select-Object without -Property")
    props = props if isinstance(props, list) else [props]
    spec = []
    for p in props:
        if isinstance(p, str):
            if has_wildcards(p):
                raise Unsupported(f"Select-Object wildcard {p}")
            spec.append((p, None))
        elif isinstance(p, Hashtable):
            label = None
            block = None
            for k, v in p.items():
                kl = k.lower()
                if kl in ("n", "name", "l", "label"):
                    label = as_string(v)
                elif kl in ("e", "expression"):
                    block = v
                else:
                    raise Unsupported(f"calculated property key {k}")
            if label is None or not isinstance(block, ScriptBlock):
                raise Unsupported("calculated property without a name and a script block")
            spec.append((label, block))
        else:
            raise Unsupported(f"Select-Object property of type {type_of(p)}")
    out = []
    for o in objs:
        row = []
        for label, block in spec:
            value = cmd.interp.invoke(block, o) if block else cmd.interp.member(o, label)
            row.append((label, value))
        out.append(CustomObject(row))
    return out


def convert_to_json(cmd, objs):
    depth = as_int(cmd.params.get("Depth", 2))
    if "InputObject" in cmd.params:
        if objs:
            raise Unsupported("ConvertTo-Json with both pipeline input and -InputObject")
        value = cmd.params["InputObject"]
    else:
        value = collapse(objs)
    if not cmd.params.get("Compress"):
        raise Unsupported("ConvertTo-Json without -Compress (5.1's indented layout)")
    return [json.dumps(to_json(value, 0, depth), separators=(",", ":"), ensure_ascii=False)]


def write_error(cmd, objs):
    message = as_string(cmd.params.get("Message"))
    category = as_string(cmd.params.get("Category", "NotSpecified"))
    error_id = as_string(cmd.params.get("ErrorId", "Microsoft.PowerShell.Commands.WriteErrorException"))
    tok = cmd.token
    cmd.error([message, f"At line:{tok.line} char:{tok.col}", f"+ {cmd.source_line.strip()}",
               f"    + CategoryInfo          : {category}: (:) [Write-Error], WriteErrorException",
               f"    + FullyQualifiedErrorId : {error_id}", " "])
    return []


BUILTINS = {
    "select-object": (select_object, (), ("Property",), ("Property",)),
    "convertto-json": (convert_to_json, ("Compress",), ("Depth", "InputObject"), ("InputObject",)),
    "write-error": (write_error, (), ("Message", "Category", "ErrorId"), ("Message",)),
}


class _OsVersion(PSObject):
    type_name = "System.OperatingSystem"

    def get(self, name):
        if name.lower() == "version":
            return Version("10.0.20348.0")
        return super().get(name)


def _escape(args):
    if args is None or len(args) != 1:
        raise Unsupported("[WildcardPattern]::Escape takes one argument")
    return wildcard_escape(as_string(args[0]))


def _os_version(args):
    if args is not None:
        raise Unsupported("[Environment]::OSVersion is a property")
    return _OsVersion()


STATICS = {
    ("wildcardpattern", "escape"): _escape,
    ("environment", "osversion"): _os_version,
}

# Automatic variables of Windows PowerShell 5.1 on Windows Server 2022.
AUTOMATIC = {
    "psversiontable": Hashtable(PSVersion=Version("5.1.20348.2652"), PSEdition="Desktop"),
}

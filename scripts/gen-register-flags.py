#!/usr/bin/env python3
"""Generate commands/src/register_flags_table.rs from upstream GitLab Runner's Go sources.

What it reads
-------------
A bare git mirror of upstream GitLab Runner (default
/work/.mirror/gitlabhq+gitlab-runner/repo, or the path given as the first argument), at HEAD,
through `git show` / `git ls-tree` only (no work tree needed):

  * commands/register.go: `RegisterCommand`, the struct whose fields `gitlab-runner register`
    turns into command-line flags. It embeds `common.RunnerConfig`; every flag reached through
    that embedding is a `config.toml` key and goes into `CONFIG_FLAGS`. Its own fields
    (`--config`, `--tag-list`, ...) and its `ConfigTemplate` (`namespace:"template"`) are listed
    in a comment only.
  * every package those structs' field types live in, resolved through the Go imports:
    common/ (config.go: RunnerConfig, RunnerCredentials, RunnerSettings, DockerConfig,
    KubernetesConfig, ...), cache/cacheconfig/, referees/, helpers/docker/ (the embedded
    docker.Credentials), common/config/runner/, common/spec/, ...
  * VERSION and go.mod (for the header: upstream version, and the golang-cli-helpers version).

How upstream turns a struct into flags
--------------------------------------
`common.NewCommand` passes the command struct to `clihelpers.GetFlagsFromStruct` of
gitlab.com/gitlab-org/golang-cli-helpers (struct_field.go; the copy vendored upstream until
Feb 2022 is at `git show 9b1304cbb^:vendor/gitlab.com/gitlab-org/golang-cli-helpers/struct_field.go`
in the mirror). It does NOT use go-flags' parser; only its tag vocabulary and convert.go. Per
struct field (reflect order, i.e. Go source order, depth first):

  * struct field:            `namespace:"x"` -> recurse with x appended to the namespace list;
                             else anonymous (embedded) -> recurse with the same list; else none.
  * pointer to struct:       `namespace:"x"` -> recurse; else none (even embedded, even with `long`).
  * chan / func / interface: none.
  * anything else (incl. pointers to non-structs, slices, maps): a flag, if it has a `short` or
    a `long` tag: name = strings.Join(append(namespaces, tag), "-") for each of them;
    env = the `env` tag verbatim, except that an env tag starting with "@" becomes
    strings.Join(append(namespaces, rest), "_"), upper-cased, '-' -> '_'.
    The `group` tag is ignored (it is go-flags' help grouping); there is no `env-namespace`.
  * values go through convert.go (copied from go-flags): slices append one element per
    occurrence, maps take `key:value` per occurrence, bools take an optional value,
    time.Duration uses time.ParseDuration, and a type with an `UnmarshalFlag` method uses it.
    An env var is one `Set` call with its whole value (urfave/cli GenericFlag).

The TOML key path is the `toml:"name,..."` name of each struct level (the Go field name when the
tag has no name); anonymous embedded structs without a toml name are flattened (BurntSushi/toml).

How to run
----------
    python3 scripts/gen-register-flags.py > commands/src/register_flags_table.rs
    python3 scripts/gen-register-flags.py /path/to/gitlab-runner.git > ...

A summary (flags per namespace, skipped fields) goes to stderr. The script fails on a Go type it
cannot resolve where the result depends on it: add the type to EXTERNAL_TYPES then.
"""

import subprocess
import sys
from collections import OrderedDict

DEFAULT_MIRROR = "/work/.mirror/gitlabhq+gitlab-runner/repo"
SCRIPT_PATH = "scripts/gen-register-flags.py"
OUT_PATH = "commands/src/register_flags_table.rs"

# Types from outside the upstream module that a flag-relevant field uses: (import path, name) ->
# Go underlying type, written as Go source. time.Duration and time.Time are special-cased.
EXTERNAL_TYPES = {
    ("k8s.io/api/core/v1", "Capability"): "string",
    ("k8s.io/api/core/v1", "ProcMountType"): "string",
    ("k8s.io/api/core/v1", "PullPolicy"): "string",
    ("github.com/sirupsen/logrus", "FieldLogger"): "interface{}",
    ("github.com/urfave/cli", "Context"): "struct{}",
    ("bufio", "Reader"): "struct{}",
}

# Fields `RegisterCommand` declares itself (checked against the source, for the reader).
EXPECTED_OWN_FLAGS = [
    "config", "tag-list", "non-interactive", "leave-runner", "registration-token",
    "run-untagged", "locked", "access-level", "maximum-timeout", "paused", "maintenance-note",
]

PREDECLARED = {
    "string": "string", "bool": "bool",
    "int": "int", "int8": "int", "int16": "int", "int32": "int", "int64": "int", "rune": "int",
    "uint": "uint", "uint8": "uint", "uint16": "uint", "uint32": "uint", "uint64": "uint",
    "uintptr": "uint", "byte": "uint",
    "float32": "float", "float64": "float",
    "complex64": "complex", "complex128": "complex",
    "error": "interface", "any": "interface",
}


class GenError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# git access
# --------------------------------------------------------------------------------------------


class Repo:
    def __init__(self, path):
        self.path = path
        self._cache = {}

    def git(self, *args):
        res = subprocess.run(
            ["git", "-C", self.path] + list(args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
        )
        if res.returncode != 0:
            raise GenError("git %s failed: %s" % (" ".join(args), res.stderr.decode().strip()))
        return res.stdout.decode("utf-8")

    def show(self, path):
        if path not in self._cache:
            self._cache[path] = self.git("show", "HEAD:" + path)
        return self._cache[path]

    def ls(self, directory):
        out = self.git("ls-tree", "--name-only", "HEAD", directory.rstrip("/") + "/")
        return [line for line in out.splitlines() if line]


# --------------------------------------------------------------------------------------------
# Go tokenizer (with automatic semicolon insertion) and a parser for declarations
# --------------------------------------------------------------------------------------------

OPERATORS = sorted(
    """... <<= >>= &^= && || <- ++ -- == != <= >= := << >> &^ += -= *= /= %= &= |= ^=
    + - * / % & | ^ < > = ! ( ) [ ] { } , ; . : ~""".split(),
    key=len, reverse=True,
)
SEMI_AFTER_KEYWORDS = {"break", "continue", "fallthrough", "return"}


class Tok:
    __slots__ = ("kind", "val", "line")

    def __init__(self, kind, val, line):
        self.kind = kind  # ident, number, string, raw, rune, op
        self.val = val
        self.line = line

    def __repr__(self):
        return "%s(%r)@%d" % (self.kind, self.val, self.line)


def tokenize(src):
    toks = []
    i, n, line = 0, len(src), 1

    def needs_semi():
        if not toks:
            return False
        t = toks[-1]
        if t.kind in ("number", "string", "raw", "rune"):
            return True
        if t.kind == "ident":
            return True
        return t.kind == "op" and t.val in (")", "]", "}", "++", "--")

    def newline():
        if needs_semi():
            toks.append(Tok("op", ";", line))

    while i < n:
        c = src[i]
        if c == "\n":
            newline()
            line += 1
            i += 1
        elif c in " \t\r\f":
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise GenError("unterminated comment at line %d" % line)
            body = src[i:j + 2]
            if "\n" in body:
                newline()
                line += body.count("\n")
            i = j + 2
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] == "_"):
                j += 1
            toks.append(Tok("ident", src[i:j], line))
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] in "._" or
                             (src[j] in "+-" and src[j - 1] in "eEpP")):
                j += 1
            toks.append(Tok("number", src[i:j], line))
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and src[j] != c:
                if src[j] == "\\":
                    j += 1
                if src[j] == "\n":
                    raise GenError("newline in string at line %d" % line)
                j += 1
            toks.append(Tok("string" if c == '"' else "rune", src[i:j + 1], line))
            i = j + 1
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise GenError("unterminated raw string at line %d" % line)
            body = src[i:j + 1]
            toks.append(Tok("raw", body, line))
            line += body.count("\n")
            i = j + 1
        else:
            for op in OPERATORS:
                if src.startswith(op, i):
                    toks.append(Tok("op", op, line))
                    i += len(op)
                    break
            else:
                raise GenError("unexpected character %r at line %d" % (c, line))
    newline()
    return toks


def go_unquote(lit):
    """strconv.Unquote for a double-quoted Go string literal."""
    if len(lit) < 2 or lit[0] != '"' or lit[-1] != '"':
        raise GenError("not a quoted string: %r" % lit)
    s = lit[1:-1]
    out = []
    raw = bytearray()  # bytes from \x and octal escapes, decoded as UTF-8 together

    def flush():
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()

    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", "'": "'", '"': '"'}
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        e = s[i + 1]
        if e in simple:
            flush()
            out.append(simple[e])
            i += 2
        elif e == "x":
            raw.append(int(s[i + 2:i + 4], 16))
            i += 4
        elif e in "01234567":
            raw.append(int(s[i + 1:i + 4], 8))
            i += 4
        elif e == "u":
            flush()
            out.append(chr(int(s[i + 2:i + 6], 16)))
            i += 6
        elif e == "U":
            flush()
            out.append(chr(int(s[i + 2:i + 10], 16)))
            i += 10
        else:
            raise GenError("bad escape in %r" % lit)
    flush()
    return "".join(out)


def string_value(tok):
    if tok.kind == "raw":
        return tok.val[1:-1].replace("\r", "")
    return go_unquote(tok.val)


def tag_lookup(tag, key):
    """reflect.StructTag.Lookup, exactly (keys are case-sensitive; first match wins)."""
    while tag:
        i = 0
        while i < len(tag) and tag[i] == " ":
            i += 1
        tag = tag[i:]
        if not tag:
            break
        i = 0
        while i < len(tag) and tag[i] > " " and tag[i] not in ':"\x7f':
            i += 1
        if i == 0 or i + 1 >= len(tag) or tag[i] != ":" or tag[i + 1] != '"':
            break
        name = tag[:i]
        tag = tag[i + 1:]
        i = 1
        while i < len(tag) and tag[i] != '"':
            if tag[i] == "\\":
                i += 1
            i += 1
        if i >= len(tag):
            break
        qvalue = tag[:i + 1]
        tag = tag[i + 1:]
        if name == key:
            try:
                return go_unquote(qvalue)
            except (GenError, ValueError, IndexError):
                return None
    return None


def tag_keys(tag):
    keys = []
    while tag:
        tag = tag.lstrip(" ")
        i = 0
        while i < len(tag) and tag[i] > " " and tag[i] not in ':"\x7f':
            i += 1
        if i == 0 or i + 1 >= len(tag) or tag[i] != ":" or tag[i + 1] != '"':
            break
        keys.append(tag[:i])
        tag = tag[i + 1:]
        i = 1
        while i < len(tag) and tag[i] != '"':
            if tag[i] == "\\":
                i += 1
            i += 1
        tag = tag[i + 1:]
    return keys


class Parser:
    """Parses the declarations this generator needs: imports, type specs, method names."""

    def __init__(self, toks, filename):
        self.t = toks
        self.p = 0
        self.filename = filename

    def peek(self, k=0):
        j = self.p + k
        return self.t[j] if j < len(self.t) else Tok("eof", "", -1)

    def next(self):
        tok = self.peek()
        self.p += 1
        return tok

    def is_op(self, val, k=0):
        tok = self.peek(k)
        return tok.kind == "op" and tok.val == val

    def expect_op(self, val):
        tok = self.next()
        if tok.kind != "op" or tok.val != val:
            raise GenError("%s:%d: expected %r, got %r" % (self.filename, tok.line, val, tok.val))
        return tok

    def skip_balanced(self):
        """Skips from an opening bracket to just after its matching closing bracket."""
        pairs = {"(": ")", "[": "]", "{": "}"}
        open_tok = self.next()
        stack = [pairs[open_tok.val]]
        while stack:
            tok = self.next()
            if tok.kind == "eof":
                raise GenError("%s: unbalanced brackets" % self.filename)
            if tok.kind == "op":
                if tok.val in pairs:
                    stack.append(pairs[tok.val])
                elif tok.val in (")", "]", "}"):
                    if tok.val != stack.pop():
                        raise GenError("%s:%d: mismatched bracket" % (self.filename, tok.line))

    # -- top level ----------------------------------------------------------------------------

    def parse_file(self):
        package = None
        imports = {}
        types = OrderedDict()
        methods = {}  # type name -> set of method names
        depth = 0
        while self.peek().kind != "eof":
            tok = self.peek()
            if tok.kind == "op" and tok.val in "([{":
                depth += 1
                self.p += 1
            elif tok.kind == "op" and tok.val in ")]}":
                depth -= 1
                self.p += 1
            elif depth == 0 and tok.kind == "ident" and tok.val == "package":
                self.p += 1
                package = self.next().val
            elif depth == 0 and tok.kind == "ident" and tok.val == "import":
                self.p += 1
                self.parse_imports(imports)
            elif depth == 0 and tok.kind == "ident" and tok.val == "type":
                self.p += 1
                if self.is_op("("):
                    self.p += 1
                    while not self.is_op(")"):
                        if self.is_op(";"):
                            self.p += 1
                            continue
                        self.parse_type_spec(types)
                    self.p += 1
                else:
                    self.parse_type_spec(types)
            elif depth == 0 and tok.kind == "ident" and tok.val == "func":
                self.p += 1
                if self.is_op("("):
                    self.parse_receiver(methods)
            else:
                self.p += 1
        return package, imports, types, methods

    def parse_imports(self, imports):
        def one():
            alias = None
            if self.peek().kind == "ident" or self.is_op("."):
                alias = self.next().val
            path = string_value(self.next())
            if alias is None:
                alias = path.rsplit("/", 1)[-1]
                alias = {"": path}.get(alias, alias)
            imports[alias] = path

        if self.is_op("("):
            self.p += 1
            while not self.is_op(")"):
                if self.is_op(";"):
                    self.p += 1
                    continue
                one()
            self.p += 1
        else:
            one()

    def parse_receiver(self, methods):
        start = self.p
        self.p += 1  # (
        if self.peek().kind == "ident" and (self.peek(1).kind == "ident" or self.is_op("*", 1)):
            self.p += 1  # receiver name
        if self.is_op("*"):
            self.p += 1
        recv = self.next()
        if recv.kind == "ident":
            if self.is_op("["):
                self.skip_balanced()
            if self.is_op(")") and self.peek(1).kind == "ident":
                methods.setdefault(recv.val, set()).add(self.peek(1).val)
        self.p = start  # let the top-level loop keep its bracket depth right

    def parse_type_spec(self, types):
        name_tok = self.next()
        if name_tok.kind != "ident":
            raise GenError("%s:%d: bad type spec" % (self.filename, name_tok.line))
        # Type parameters: `type X[T any] ...` (an array type is `type X [N]T`).
        if self.is_op("[") and self.peek(1).kind == "ident" and not self.is_op("]", 2):
            self.skip_balanced()
        alias = False
        if self.is_op("="):
            alias = True
            self.p += 1
        texpr = self.parse_type()
        types[name_tok.val] = {"expr": texpr, "alias": alias, "line": name_tok.line}

    # -- type expressions ---------------------------------------------------------------------

    def starts_type(self):
        tok = self.peek()
        if tok.kind == "ident":
            return True
        return tok.kind == "op" and tok.val in ("*", "[", "(", "<-")

    def parse_type(self):
        tok = self.peek()
        if tok.kind == "op":
            if tok.val == "*":
                self.p += 1
                return {"t": "ptr", "elem": self.parse_type()}
            if tok.val == "[":
                if self.is_op("]", 1):
                    self.p += 2
                    return {"t": "slice", "elem": self.parse_type()}
                self.skip_balanced()
                return {"t": "array", "elem": self.parse_type()}
            if tok.val == "(":
                self.p += 1
                inner = self.parse_type()
                self.expect_op(")")
                return inner
            if tok.val == "<-":
                self.p += 1
                self.next()  # chan
                return {"t": "chan", "elem": self.parse_type()}
            raise GenError("%s:%d: unexpected %r in type" % (self.filename, tok.line, tok.val))
        if tok.kind != "ident":
            raise GenError("%s:%d: unexpected %r in type" % (self.filename, tok.line, tok.val))
        if tok.val == "map":
            self.p += 1
            self.expect_op("[")
            key = self.parse_type()
            self.expect_op("]")
            return {"t": "map", "key": key, "val": self.parse_type()}
        if tok.val == "chan":
            self.p += 1
            if self.is_op("<-"):
                self.p += 1
            return {"t": "chan", "elem": self.parse_type()}
        if tok.val == "func":
            self.p += 1
            self.skip_balanced()  # parameters
            if self.is_op("("):
                self.skip_balanced()
            elif self.starts_type():
                self.parse_type()
            return {"t": "func"}
        if tok.val == "interface":
            self.p += 1
            self.skip_balanced()
            return {"t": "interface"}
        if tok.val == "struct":
            self.p += 1
            return {"t": "struct", "fields": self.parse_fields()}
        self.p += 1
        pkg, name = None, tok.val
        if self.is_op(".") and self.peek(1).kind == "ident":
            pkg, name = name, self.peek(1).val
            self.p += 2
        node = {"t": "name", "pkg": pkg, "name": name}
        if self.is_op("["):
            self.skip_balanced()  # type arguments
        return node

    def parse_fields(self):
        self.expect_op("{")
        fields = []
        while not self.is_op("}"):
            if self.is_op(";"):
                self.p += 1
                continue
            line = self.peek().line
            tok = self.peek()
            embedded = (
                self.is_op("*")
                or (tok.kind == "ident" and self.is_op(".", 1))
                or (tok.kind == "ident" and (self.is_op(";", 1) or self.is_op("}", 1)
                                             or self.peek(1).kind in ("string", "raw")))
            )
            if embedded:
                names = None
            else:
                names = [self.next().val]
                while self.is_op(","):
                    self.p += 1
                    names.append(self.next().val)
            texpr = self.parse_type()
            tag = ""
            if self.peek().kind in ("string", "raw"):
                tag = string_value(self.next())
            fields.append({"names": names, "type": texpr, "tag": tag, "line": line})
            if self.is_op(";"):
                self.p += 1
            elif not self.is_op("}"):
                raise GenError("%s:%d: bad struct field" % (self.filename, self.peek().line))
        self.p += 1
        return fields


# --------------------------------------------------------------------------------------------
# Packages and type resolution
# --------------------------------------------------------------------------------------------


class Package:
    def __init__(self, name, directory):
        self.name = name
        self.dir = directory
        self.types = {}  # name -> (spec, imports of its file, file)
        self.methods = {}


class Resolved:
    """A Go type with its reflect kind resolved."""

    def __init__(self, kind, src, **kw):
        self.kind = kind  # string bool int uint float complex slice array map ptr struct
        #                   interface func chan duration time
        self.src = src  # the type as written in Go source
        self.elem = kw.get("elem")
        self.key = kw.get("key")
        self.val = kw.get("val")
        self.fields = kw.get("fields")  # list of (field, Package, imports)
        self.methods = kw.get("methods", set())  # methods of T and *T (named types)
        self.named = kw.get("named")


class Universe:
    def __init__(self, repo):
        self.repo = repo
        gomod = repo.show("go.mod")
        self.module = gomod.split("module", 1)[1].split()[0]
        self.gomod = gomod
        self.packages = {}

    def package(self, directory):
        if directory in self.packages:
            return self.packages[directory]
        files = [f for f in self.repo.ls(directory)
                 if f.endswith(".go") and not f.endswith("_test.go")]
        if not files:
            raise GenError("no Go files in %s" % directory)
        pkg = None
        for path in files:
            parser = Parser(tokenize(self.repo.show(path)), path)
            name, imports, types, methods = parser.parse_file()
            if pkg is None:
                pkg = Package(name, directory)
            for tname, spec in types.items():
                pkg.types.setdefault(tname, (spec, imports, path))
            for tname, ms in methods.items():
                pkg.methods.setdefault(tname, set()).update(ms)
        self.packages[directory] = pkg
        return pkg

    def local_dir(self, import_path):
        if import_path == self.module:
            return ""
        if import_path.startswith(self.module + "/"):
            return import_path[len(self.module) + 1:]
        return None

    def resolve(self, texpr, pkg, imports, where):
        t = texpr["t"]
        if t == "ptr":
            elem = self.resolve(texpr["elem"], pkg, imports, where)
            return Resolved("ptr", "*" + elem.src, elem=elem)
        if t == "slice":
            elem = self.resolve(texpr["elem"], pkg, imports, where)
            return Resolved("slice", "[]" + elem.src, elem=elem)
        if t == "array":
            elem = self.resolve(texpr["elem"], pkg, imports, where)
            return Resolved("array", "[N]" + elem.src, elem=elem)
        if t == "map":
            key = self.resolve(texpr["key"], pkg, imports, where)
            val = self.resolve(texpr["val"], pkg, imports, where)
            return Resolved("map", "map[%s]%s" % (key.src, val.src), key=key, val=val)
        if t == "chan":
            return Resolved("chan", "chan")
        if t == "func":
            return Resolved("func", "func(...)")
        if t == "interface":
            return Resolved("interface", "interface{...}")
        if t == "struct":
            fields = [(f, pkg, imports) for f in texpr["fields"]]
            return Resolved("struct", "struct{...}", fields=fields)
        # a name
        name, qual = texpr["name"], texpr["pkg"]
        if qual is None:
            if name in pkg.types:
                return self.resolve_named(pkg, name, where)
            if name in PREDECLARED:
                return Resolved(PREDECLARED[name], name)
            raise GenError("%s: unknown type %s in package %s" % (where, name, pkg.dir))
        if qual not in imports:
            raise GenError("%s: unknown package %s (type %s.%s)" % (where, qual, qual, name))
        path = imports[qual]
        src = "%s.%s" % (qual, name)
        if path == "time" and name == "Duration":
            return Resolved("duration", src)
        if path == "time" and name == "Time":
            return Resolved("time", src, fields=[])
        directory = self.local_dir(path)
        if directory is not None:
            other = self.package(directory)
            if name not in other.types:
                raise GenError("%s: %s has no type %s" % (where, directory, name))
            res = self.resolve_named(other, name, where)
            res.src = src
            return res
        if (path, name) in EXTERNAL_TYPES:
            under = Parser(tokenize(EXTERNAL_TYPES[(path, name)]), "EXTERNAL_TYPES").parse_type()
            res = self.resolve(under, pkg, {}, where)
            res.src = src
            return res
        raise GenError(
            "%s: type %s from %s is outside the module: add it to EXTERNAL_TYPES" % (where, src, path)
        )

    def resolve_named(self, pkg, name, where):
        spec, imports, _path = pkg.types[name]
        under = self.resolve(spec["expr"], pkg, imports, where)
        if spec["alias"]:
            return under
        res = Resolved(under.kind, name, elem=under.elem, key=under.key, val=under.val,
                       fields=under.fields, methods=set(pkg.methods.get(name, set())),
                       named=(pkg.dir, name))
        return res


# --------------------------------------------------------------------------------------------
# Walking RegisterCommand the way golang-cli-helpers does
# --------------------------------------------------------------------------------------------


def toml_name(tag, go_name, anonymous):
    value = tag_lookup(tag, "toml")
    name = None if value is None else value.split(",", 1)[0]
    if name:
        return name
    return None if anonymous else go_name


def field_names(field, res=None):
    if field["names"] is not None:
        return field["names"]
    t = field["type"]
    while t["t"] == "ptr":
        t = t["elem"]
    return [t.get("name", "?")]


class Walker:
    def __init__(self, universe):
        self.u = universe
        self.flags = []  # every flag, in order
        self.not_flags = []  # (path, go type, reason): a long/short tag but never a flag
        self.no_long = []  # (path, go type, toml key): reached, exported, no long/short tag
        self.tag_case = []  # (path, key): tag keys that differ from long/env/... by case only
        self.notes = []

    def walk(self, res, ns, key, section, path):
        for field, pkg, imports in res.fields:
            for name in field_names(field):
                self.visit(field, name, pkg, imports, ns, key, section, path + [name])

    def visit(self, field, name, pkg, imports, ns, key, section, path):
        tag = field["tag"]
        anonymous = field["names"] is None
        namespace = tag_lookup(tag, "namespace") or ""
        short = tag_lookup(tag, "short") or ""
        long = tag_lookup(tag, "long") or ""
        tname = toml_name(tag, name, anonymous)
        where = "%s:%d (%s)" % (pkg.dir, field["line"], ".".join(path))
        dotted = ".".join(path)
        for k in tag_keys(tag):
            if k != k.lower() and k.lower() in ("long", "short", "env", "namespace", "description"):
                self.tag_case.append((dotted, k))
        sub_key = key + ([tname] if tname is not None else [])
        if not (anonymous or namespace or short or long):
            if name[:1].isupper() and section != "own":
                gotype = self.describe(field, pkg, imports, where)
                self.no_long.append((dotted, gotype, sub_key))
            return
        res = self.u.resolve(field["type"], pkg, imports, where)
        kind = res.kind
        if kind == "struct" or kind == "time":
            if namespace:
                self.walk(res, ns + [namespace], sub_key, section, path)
            elif anonymous:
                self.walk(res, ns, sub_key, section, path)
            elif short or long:
                self.not_flags.append((dotted, res.src, "struct without `namespace`: not walked, "
                                       "so its `long` tag makes no flag"))
            return
        if kind == "ptr":
            if res.elem.kind in ("struct", "time"):
                if namespace:
                    self.walk(res.elem, ns + [namespace], sub_key, section, path)
                elif short or long:
                    self.not_flags.append((dotted, res.src, "pointer to struct without "
                                           "`namespace`: its `long` tag makes no flag"))
                else:
                    self.notes.append("%s (%s, embedded): a pointer embedding without `namespace` "
                                      "is not walked" % (dotted, res.src))
                return
            self.flag(field, name, res, ns, sub_key, section, path)
            return
        if kind in ("chan", "func", "interface"):
            if short or long:
                self.not_flags.append((dotted, res.src, "%s: never a flag" % kind))
            return
        self.flag(field, name, res, ns, sub_key, section, path)

    def describe(self, field, pkg, imports, where):
        try:
            return self.u.resolve(field["type"], pkg, imports, where).src
        except GenError:
            return go_src(field["type"])

    def flag(self, field, name, res, ns, key, section, path):
        tag = field["tag"]
        short = tag_lookup(tag, "short") or ""
        long = tag_lookup(tag, "long") or ""
        names = []
        if short:
            names.append("-".join(ns + [short]))
        if long:
            names.append("-".join(ns + [long]))
        if not names:
            if name[:1].isupper() and section != "own":
                self.no_long.append((".".join(path), res.src, key))
            return
        env = tag_lookup(tag, "env") or ""
        env_raw = env
        if env.startswith("@"):
            env = "_".join(ns + [env[1:]]).upper().replace("-", "_")
        kind, why = classify(res)
        self.flags.append({
            "section": section,
            "flag": "-".join(ns + [long]) if long else names[0],
            "names": names,
            "short": "-".join(ns + [short]) if short else "",
            "env": env,
            "env_raw": env_raw,
            "key": key,
            "kind": kind,
            "why": why,
            "help": tag_lookup(tag, "description") or "",
            "gotype": res.src,
            "ptr_bool": res.kind == "ptr" and res.elem.kind == "bool",
            "ns": ns,
            "path": ".".join(path),
            "unmarshal": "UnmarshalFlag" in deref(res).methods,
        })


def deref(res):
    return res.elem if res.kind == "ptr" else res


def classify(res):
    """(FlagKind name, None) or (None, reason) for a type golang-cli-helpers makes a flag of."""
    base = deref(res)
    k = base.kind
    if base.kind == "ptr":
        return None, "pointer to pointer"
    if k == "duration":
        return None, "a duration (see the note above)"
    if "UnmarshalFlag" in base.methods and k != "slice":
        return None, "custom UnmarshalFlag on %s" % base.src
    if k == "string":
        return "Text", None
    if k == "bool":
        return "Bool", None
    if k in ("int", "uint"):
        return "Integer", None
    if k == "float":
        return "Float", None
    if k == "slice":
        e = base.elem
        if "UnmarshalFlag" in base.methods:
            if e.kind == "string":
                return "TextList", None  # StringOrArray-like: noted per entry
            return None, ("%s.UnmarshalFlag parses each value itself (a slice of %s)"
                          % (base.src, e.src))
        if e.kind == "string":
            return "TextList", None
        return None, ("a slice of %s: one element per occurrence, parsed as %s"
                      % (e.src, e.kind))
    if k == "map":
        if base.key.kind == "string" and base.val.kind == "string":
            return "Map", None
        return None, ("a map of %s: `key:value` per occurrence, the value parsed as %s"
                      % (base.val.src, base.val.kind if base.val.kind != "slice"
                         else "a one-element list (a later occurrence of a key replaces it)"))
    return None, "a %s is not covered by FlagKind" % k


def go_src(texpr):
    t = texpr["t"]
    if t == "ptr":
        return "*" + go_src(texpr["elem"])
    if t == "slice":
        return "[]" + go_src(texpr["elem"])
    if t == "array":
        return "[N]" + go_src(texpr["elem"])
    if t == "map":
        return "map[%s]%s" % (go_src(texpr["key"]), go_src(texpr["val"]))
    if t == "name":
        return ("%s.%s" % (texpr["pkg"], texpr["name"])) if texpr["pkg"] else texpr["name"]
    return t


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def rust_str(s):
    out = ['"']
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7f:
            out.append("\\u{%x}" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def ns_label(ns):
    return "-".join(ns) if ns else "(top level)"


def main(argv):
    mirror = argv[1] if len(argv) > 1 else DEFAULT_MIRROR
    repo = Repo(mirror)
    commit = repo.git("rev-parse", "HEAD").strip()
    version = repo.show("VERSION").strip()
    u = Universe(repo)
    helpers_version = "?"
    for line in u.gomod.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "gitlab.com/gitlab-org/golang-cli-helpers":
            helpers_version = parts[1]
    if "gitlab.com/gitlab-org/golang-cli-helpers" not in repo.show("common/command.go"):
        raise GenError("common/command.go no longer uses golang-cli-helpers: check the rules")

    commands = u.package("commands")
    if "RegisterCommand" not in commands.types:
        raise GenError("commands: no RegisterCommand")
    spec, imports, _ = commands.types["RegisterCommand"]
    reg = u.resolve(spec["expr"], commands, imports, "RegisterCommand")

    w = Walker(u)
    embedded_runner_config = False
    for field, pkg, imps in reg.fields:
        t = field["type"]
        is_rc = (field["names"] is None and t["t"] == "name" and t["name"] == "RunnerConfig")
        embedded_runner_config |= is_rc
        section = "table" if is_rc else "own"
        for name in field_names(field):
            w.visit(field, name, pkg, imps, [], [], section, [name])
    if not embedded_runner_config:
        raise GenError("RegisterCommand no longer embeds common.RunnerConfig")

    own = [f for f in w.flags if f["section"] == "own"]
    table = [f for f in w.flags if f["section"] == "table"]
    own_direct = [f["flag"] for f in own if not f["ns"]]
    if own_direct != EXPECTED_OWN_FLAGS:
        print("warning: RegisterCommand's own flags changed: %s" % own_direct, file=sys.stderr)

    # Duplicate flag names would make urfave/cli panic upstream: check anyway.
    seen = {}
    for f in w.flags:
        for n in f["names"]:
            if n in seen:
                raise GenError("duplicate flag %s (%s and %s)" % (n, seen[n], f["path"]))
            seen[n] = f["path"]

    supported = [f for f in table if f["kind"]]
    unsupported = [f for f in table if not f["kind"]]
    toml_dash = [f for f in supported if "-" in f["key"]]
    if toml_dash:
        raise GenError("flags without a TOML key (toml:\"-\"): %s" % [f["flag"] for f in toml_dash])

    counts = OrderedDict()
    for f in supported:
        counts[ns_label(f["ns"])] = counts.get(ns_label(f["ns"]), 0) + 1

    o = []
    emit = o.append
    emit("// @generated by %s: do not edit by hand." % SCRIPT_PATH)
    emit("// Regenerate: python3 %s > %s" % (SCRIPT_PATH, OUT_PATH))
    emit("//")
    emit("// Source: upstream GitLab Runner %s, commit %s" % (version, commit))
    emit("// (commands/register.go `RegisterCommand`, which embeds common.RunnerConfig; flags made")
    emit("// by gitlab.com/gitlab-org/golang-cli-helpers %s, per go.mod)." % helpers_version)
    emit("//")
    emit("// Rules of golang-cli-helpers (struct_field.go), as applied here:")
    emit("// - flag name: the `namespace` tags of the enclosing struct fields and the `long` tag,")
    emit("//   joined with \"-\" (`--docker-image`, `--cache-s3-bucket-name`); `_` in tags stays.")
    emit("//   A `short` tag is an alias named the same way; the `group` tag is ignored.")
    emit("// - env: the `env` tag verbatim, without any namespace; only an `env` tag starting")
    emit("//   with \"@\" gets the namespaces, joined with \"_\", upper-cased, '-' -> '_'")
    emit("//   (`@PRIVILEGED` -> KUBERNETES_BUILD_CONTAINER_SECURITY_CONTEXT_PRIVILEGED).")
    emit("//   No `env` tag: None. An env var's whole value is one occurrence (never split).")
    emit("// - key: the `toml` names of each struct level (the Go field name when the tag has")
    emit("//   none); embedded structs are flattened.")
    emit("// - a struct (or pointer to one) without `namespace` is not walked; its fields are")
    emit("//   no flags, whatever their tags. A field without `long`/`short` is no flag.")
    emit("// - values (convert.go): Bool takes an optional value (bare = true, else")
    emit("//   strconv.ParseBool); TextList appends one element per occurrence; Map takes")
    emit("//   `key:value` per occurrence (split at the first ':'; no ':' = empty value).")
    emit("//   A `*bool` field is no bare switch upstream: StructFieldValue.IsBoolFlag is false")
    emit("//   for its nil pointer, so `--flag` takes the next argument as its value (use")
    emit("//   `--flag=true`); they are listed at the end.")
    emit("//")
    width = max(len(label) for label in counts)
    emit("// Flags per namespace (%d in all):" % len(supported))
    for label, n in counts.items():
        emit("//   %-*s %3d" % (width, label, n))
    emit("")
    emit("/// Every `config.toml` key upstream's `register` takes as a flag: generated.")
    emit("#[rustfmt::skip]")
    emit("pub(crate) const CONFIG_FLAGS: &[ConfigFlag] = &[")
    for f in supported:
        if f["short"]:
            emit("    // Also `--%s` / `-%s` (`short` tag)." % (f["short"], f["short"]))
        if f["unmarshal"]:
            emit("    // %s.UnmarshalFlag: one occurrence is split on ',' and replaces the list"
                 % deref_src(f))
            emit("    // (an env var likewise).")
        env = "Some(%s)" % rust_str(f["env"]) if f["env"] else "None"
        key = "&[%s]" % ", ".join(rust_str(k) for k in f["key"])
        emit("    ConfigFlag { flag: %s, env: %s, key: %s, kind: FlagKind::%s, help: %s },"
             % (rust_str(f["flag"]), env, key, f["kind"], rust_str(f["help"])))
    emit("];")
    emit("")
    emit("// RegisterCommand's own flags (not config.toml keys, so not in CONFIG_FLAGS):")
    for f in own:
        alias = (" (alias -%s)" % f["short"]) if f["short"] else ""
        emit("//   --%s%s, env %s, %s: %s" % (f["flag"], alias, f["env"] or "-", f["gotype"],
                                            f["help"]))
    for note in w.notes:
        emit("//   note: %s" % note)
    emit("")
    emit("// Not flags (type not supported): upstream flags whose type FlagKind cannot express")
    emit("// (left out of CONFIG_FLAGS), and fields with a `long` tag that never become a flag.")
    emit("// (A duration flag takes Go syntax, time.ParseDuration: `1h30m`; BurntSushi/toml")
    emit("// writes a time.Duration as a string, \"1h30m0s\", and reads a string or integer ns.)")
    for f in unsupported:
        emit("//   --%s (env %s, key %s): %s: %s" % (
            f["flag"], f["env"] or "-", ".".join(f["key"]), f["gotype"], f["why"]))
    for dotted, gotype, why in w.not_flags:
        emit("//   %s: %s: %s" % (dotted, gotype, why))
    if w.tag_case:
        emit("//")
        emit("// Tag keys that are not the lower-case key the library reads (so they are ignored):")
        for dotted, k in w.tag_case:
            emit("//   %s: `%s:` (ignored: StructTag.Get is case-sensitive)" % (dotted, k))
    emit("")
    emit("// `*bool` flags (Bool above; need an explicit value upstream, see the header):")
    ptr_bools = [f["flag"] for f in supported if f["ptr_bool"]]
    line = "//  "
    for name in ptr_bools:
        if len(line) + len(name) + 3 > 100:
            emit(line)
            line = "//  "
        line += " --" + name
    if ptr_bools:
        emit(line)
    emit("")
    emit("// No `long` (or `short`) tag, so not a flag (fields reached by the walk):")
    for dotted, gotype, key in w.no_long:
        emit("//   %s: %s (key %s)" % (dotted, gotype, ".".join(key) if key else "-"))
    sys.stdout.write("\n".join(o) + "\n")

    # Summary for the person running it.
    err = sys.stderr
    print("upstream %s (%s): %d flags in CONFIG_FLAGS, %d left out (type), %d own flags"
          % (version, commit[:12], len(supported), len(unsupported), len(own)), file=err)
    for label, n in counts.items():
        print("  %-*s %3d" % (width, label, n), file=err)
    for f in unsupported:
        print("  left out: --%s (%s): %s" % (f["flag"], f["gotype"], f["why"]), file=err)
    for dotted, gotype, why in w.not_flags:
        print("  not a flag: %s (%s): %s" % (dotted, gotype, why), file=err)
    return 0


def deref_src(f):
    return f["gotype"].lstrip("*")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except GenError as e:
        print("gen-register-flags: %s" % e, file=sys.stderr)
        sys.exit(1)

//! The `${{ }}` expression language of the Step Runner ("GitLab Functions"): templates in a
//! step's inputs, env and the like that read the contexts a step can see (`inputs`, `env`,
//! `job`, `steps`, ...) and compute with them.
//!
//! A string that is exactly one `${{ expr }}` keeps the expression's JSON type; otherwise each
//! expression's result is stringified and spliced into the text. `\${{` writes a literal
//! `${{`. Values read at or under a path marked sensitive make every result computed from
//! them sensitive, so the caller can mask it.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};

/// How deeply the parser recurses (parentheses, literals, unary operators) before giving up.
const MAX_NESTING: usize = 64;
/// How deep an expression's tree may be (long operator chains count too), so that evaluating
/// and dropping it cannot exhaust the stack.
const MAX_DEPTH: usize = 256;

/// The contexts an expression can see, and which paths in them are sensitive.
#[derive(Clone, Default)]
pub struct Scope {
    values: Map<String, Value>,
    sensitive: Vec<Vec<String>>,
}

impl fmt::Debug for Scope {
    // The contexts' names only: their values may hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("contexts", &self.values.keys().collect::<Vec<_>>())
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

impl Scope {
    /// A scope with no contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a top-level context: `inputs`, `env`, `job`, `vars`, `steps`,
    /// `step_dir`, `func_dir`, `work_dir`, `output_file`, `export_file`.
    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_owned(), value);
    }

    /// Marks a path (e.g. `["inputs", "password"]`) sensitive: any value read at or under it,
    /// or containing it, makes the result sensitive. Array elements are named by their index.
    pub fn mark_sensitive(&mut self, path: &[&str]) {
        let path: Vec<String> = path.iter().map(|part| (*part).to_owned()).collect();
        if !self.sensitive.contains(&path) {
            self.sensitive.push(path);
        }
    }

    /// Whether a value read at `path` is at, under or above a sensitive path.
    fn is_sensitive(&self, path: &[String]) -> bool {
        self.sensitive
            .iter()
            .any(|marked| marked.iter().zip(path).all(|(a, b)| a == b))
    }
}

/// The result of expanding a template.
#[derive(Clone, PartialEq)]
pub struct Expanded {
    /// The expanded value.
    pub value: Value,
    /// Whether it was computed from a sensitive value (and must be masked).
    pub sensitive: bool,
}

impl fmt::Debug for Expanded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Expanded");
        if self.sensitive {
            out.field("value", &format_args!("[MASKED]"));
        } else {
            out.field("value", &self.value);
        }
        out.field("sensitive", &self.sensitive).finish()
    }
}

/// Why a template could not be expanded: a parse error or an evaluation error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    message: String,
}

impl ExprError {
    fn new(message: String) -> Self {
        Self { message }
    }

    fn eval(at: &str, what: &str) -> Self {
        Self::new(format!("evaluating expression failed at {at:?}: {what}"))
    }

    /// The error's message (what [`Display`](fmt::Display) prints).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExprError {}

/// Expands every `${{ expr }}` in `template`. A template that is exactly one expression keeps
/// the expression's JSON type; otherwise the results are stringified into the text.
pub fn expand_str(template: &str, scope: &Scope) -> Result<Expanded, ExprError> {
    if !template.contains("${{") {
        return Ok(Expanded {
            value: Value::String(template.to_owned()),
            sensitive: false,
        });
    }
    if let Some(body) = template.strip_prefix("${{") {
        if let Some(close) = find_close(body).filter(|&close| close + 2 == body.len()) {
            let (value, sensitive) = evaluate(body.get(..close).unwrap_or(""), scope)?;
            return Ok(Expanded { value, sensitive });
        }
    }
    let mut out = String::with_capacity(template.len());
    let mut sensitive = false;
    let mut done = 0; // bytes of `template` handled so far
    while let Some(found) = template.get(done..).and_then(|rest| rest.find("${{")) {
        let open = done + found;
        let body_start = open + 3;
        let body = template.get(body_start..).unwrap_or("");
        if open > done && template.as_bytes().get(open - 1) == Some(&b'\\') {
            // `\${{`: a literal `${{`, and the text up to the next `}}` is copied unevaluated
            // (it is not an expression, so its quotes are not string literals).
            out.push_str(template.get(done..open - 1).unwrap_or(""));
            out.push_str("${{");
            let end = body
                .find("}}")
                .map_or(template.len(), |close| body_start + close + 2);
            out.push_str(template.get(body_start..end).unwrap_or(""));
            done = end;
            continue;
        }
        let Some(close) = find_close(body) else {
            return Err(ExprError::new(format!(
                "parsing template: expected \"}}}}\" to close the \"${{{{\" at offset {open}"
            )));
        };
        out.push_str(template.get(done..open).unwrap_or(""));
        let (value, part_sensitive) = evaluate(body.get(..close).unwrap_or(""), scope)?;
        sensitive |= part_sensitive;
        out.push_str(&stringify(&value));
        done = body_start + close + 2;
    }
    out.push_str(template.get(done..).unwrap_or(""));
    Ok(Expanded {
        value: Value::String(out),
        sensitive,
    })
}

/// Expands every string in `value`, walking arrays and objects (object keys are kept as they
/// are). The result is sensitive if any part of it is.
pub fn expand_value(value: &Value, scope: &Scope) -> Result<Expanded, ExprError> {
    let mut sensitive = false;
    let value = expand_walk(value, scope, &mut sensitive)?;
    Ok(Expanded { value, sensitive })
}

fn expand_walk(value: &Value, scope: &Scope, sensitive: &mut bool) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(text) => {
            let expanded = expand_str(text, scope)?;
            *sensitive |= expanded.sensitive;
            expanded.value
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| expand_walk(item, scope, sensitive))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, item)| Ok((key.clone(), expand_walk(item, scope, sensitive)?)))
                .collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

/// The offset in `body` of the first `}}` outside a string literal.
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match quote {
            Some(_) if byte == b'\\' => i += 1,
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'"' || byte == b'\'' => quote = Some(byte),
            None if byte == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// Parses and evaluates one expression (the text between `${{` and `}}`).
fn evaluate(body: &str, scope: &Scope) -> Result<(Value, bool), ExprError> {
    let source = body.trim();
    let node = parse(source).map_err(|(what, at)| {
        ExprError::new(format!(
            "parsing expression {source:?}: {what} at offset {at}"
        ))
    })?;
    let (value, sensitive) = Evaluator { scope }.eval_settled(&node)?;
    Ok((value.into_owned(), sensitive))
}

/// The text a value is spliced into a template as.
fn stringify(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format_number(n),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// Numbers in their shortest form: integral floats without `.0`.
fn format_number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
        _ => n.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(entries) => !entries.is_empty(),
    }
}

// ---- lexing ----------------------------------------------------------------------------

/// A parse error: what was expected or found, and the byte offset in the expression.
type ParseError = (String, usize);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Number),
    Str(String),
    Ident(String),
    Punct(&'static str),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let matches = self.peek() == Some(c);
        if matches {
            self.pos += c.len_utf8();
        }
        matches
    }

    fn tokens(mut self) -> Result<Vec<Token>, ParseError> {
        let mut tokens = Vec::new();
        while let Some(c) = self.peek() {
            let at = self.pos;
            let tok = if c.is_whitespace() {
                self.bump();
                continue;
            } else if c.is_ascii_digit() {
                self.number(at)?
            } else if c.is_ascii_alphabetic() || c == '_' {
                while self.peek().is_some_and(is_ident_char) {
                    self.bump();
                }
                Tok::Ident(self.src.get(at..self.pos).unwrap_or("").to_owned())
            } else if c == '"' || c == '\'' {
                self.string(at)?
            } else {
                self.bump();
                Tok::Punct(self.punct(c, at)?)
            };
            tokens.push(Token { tok, at });
        }
        tokens.push(Token {
            tok: Tok::End,
            at: self.src.len(),
        });
        Ok(tokens)
    }

    fn punct(&mut self, c: char, at: usize) -> Result<&'static str, ParseError> {
        Ok(match c {
            '|' | '&' | '=' => {
                let (single, double) = match c {
                    '|' => ("|", "||"),
                    '&' => ("&", "&&"),
                    _ => ("=", "=="),
                };
                if !self.eat(c) {
                    return Err((format!("expected {double:?}, found {single:?}"), at));
                }
                double
            }
            '!' if self.eat('=') => "!=",
            '<' if self.eat('=') => "<=",
            '>' if self.eat('=') => ">=",
            '!' => "!",
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '%' => "%",
            '.' => ".",
            ',' => ",",
            ':' => ":",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            '{' => "{",
            '}' => "}",
            other => return Err((format!("unexpected character {other:?}"), at)),
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        self.pos - start
    }

    fn number(&mut self, at: usize) -> Result<Tok, ParseError> {
        self.digits();
        let mut integral = true;
        if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            self.digits();
            integral = false;
        }
        let mut valid = true;
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            valid = self.digits() > 0;
            integral = false;
        }
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
            valid = false;
        }
        let text = self.src.get(at..self.pos).unwrap_or("");
        let number = if !valid {
            None
        } else if integral {
            text.parse::<i64>()
                .ok()
                .map(Number::from)
                .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64))
        } else {
            text.parse::<f64>().ok().and_then(Number::from_f64)
        };
        number
            .map(Tok::Num)
            .ok_or_else(|| (format!("invalid number {text:?}"), at))
    }

    fn string(&mut self, at: usize) -> Result<Tok, ParseError> {
        let quote = self.bump();
        let mut text = String::new();
        loop {
            let escape_at = self.pos;
            match self.bump() {
                None => return Err(("unterminated string".to_owned(), at)),
                Some(c) if Some(c) == quote => return Ok(Tok::Str(text)),
                Some('\\') => text.push(match self.bump() {
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some(other) => {
                        return Err((format!("unknown escape \"\\{other}\""), escape_at));
                    }
                    None => return Err(("unterminated string".to_owned(), at)),
                }),
                Some(c) => text.push(c),
            }
        }
    }
}

// ---- parsing ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    fn text(self) -> &'static str {
        match self {
            Self::Or => "||",
            Self::And => "&&",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Rem => "%",
        }
    }
}

#[derive(Debug)]
enum Kind {
    Literal(Value),
    Ident(String),
    Member(Box<Node>, String),
    Index(Box<Node>, Box<Node>),
    Call(String, Vec<Node>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    depth: usize,
}

impl Node {
    fn new(kind: Kind, at: usize) -> Result<Self, ParseError> {
        let children = match &kind {
            Kind::Literal(_) | Kind::Ident(_) => 0,
            Kind::Member(base, _) | Kind::Not(base) | Kind::Neg(base) => base.depth,
            Kind::Index(a, b) | Kind::Binary(_, a, b) => a.depth.max(b.depth),
            Kind::Call(_, items) | Kind::Array(items) => {
                items.iter().map(|n| n.depth).max().unwrap_or(0)
            }
            Kind::Object(entries) => entries.iter().map(|(_, n)| n.depth).max().unwrap_or(0),
        };
        if children >= MAX_DEPTH {
            return Err(("the expression is nested too deeply".to_owned(), at));
        }
        Ok(Self {
            kind,
            depth: children + 1,
        })
    }
}

fn parse(source: &str) -> Result<Node, ParseError> {
    let tokens = Lexer {
        src: source,
        pos: 0,
    }
    .tokens()?;
    let mut parser = Parser {
        end: Token {
            tok: Tok::End,
            at: source.len(),
        },
        tokens,
        pos: 0,
        nesting: 0,
    };
    let node = parser.expr()?;
    match parser.peek() {
        Token { tok: Tok::End, .. } => Ok(node),
        token => Err((format!("unexpected {}", describe(&token.tok)), token.at)),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(n) => format!("number {n}"),
        Tok::Str(_) => "a string".to_owned(),
        Tok::Ident(name) => format!("name {name:?}"),
        Tok::Punct(p) => format!("{p:?}"),
        Tok::End => "the end of the expression".to_owned(),
    }
}

struct Parser {
    tokens: Vec<Token>,
    end: Token,
    pos: usize,
    nesting: usize,
}

type LevelFn = fn(&mut Parser) -> Result<Node, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&self.end)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.pos += 1;
        }
        token
    }

    fn eat(&mut self, punct: &str) -> bool {
        let matches = matches!(&self.peek().tok, Tok::Punct(p) if *p == punct);
        if matches {
            self.pos += 1;
        }
        matches
    }

    fn expect(&mut self, punct: &str, what: &str) -> Result<(), ParseError> {
        if self.eat(punct) {
            return Ok(());
        }
        let token = self.peek();
        Err((
            format!("expected {what}, found {}", describe(&token.tok)),
            token.at,
        ))
    }

    fn nested<T>(
        &mut self,
        at: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.nesting >= MAX_NESTING {
            return Err(("the expression is nested too deeply".to_owned(), at));
        }
        self.nesting += 1;
        let result = parse(self);
        self.nesting -= 1;
        result
    }

    fn expr(&mut self) -> Result<Node, ParseError> {
        let at = self.peek().at;
        self.nested(at, Self::or)
    }

    fn binary(&mut self, ops: &[(&str, BinOp)], next: LevelFn) -> Result<Node, ParseError> {
        let mut lhs = next(self)?;
        'chain: loop {
            for &(text, op) in ops {
                let at = self.peek().at;
                if self.eat(text) {
                    let rhs = next(self)?;
                    lhs = Node::new(Kind::Binary(op, Box::new(lhs), Box::new(rhs)), at)?;
                    continue 'chain;
                }
            }
            return Ok(lhs);
        }
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        self.binary(&[("||", BinOp::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        self.binary(&[("&&", BinOp::And)], Self::equality)
    }

    fn equality(&mut self) -> Result<Node, ParseError> {
        self.binary(&[("==", BinOp::Eq), ("!=", BinOp::Ne)], Self::comparison)
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        let ops = [
            ("<", BinOp::Lt),
            ("<=", BinOp::Le),
            (">", BinOp::Gt),
            (">=", BinOp::Ge),
        ];
        self.binary(&ops, Self::additive)
    }

    fn additive(&mut self) -> Result<Node, ParseError> {
        self.binary(
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
            Self::multiplicative,
        )
    }

    fn multiplicative(&mut self) -> Result<Node, ParseError> {
        let ops = [("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Rem)];
        self.binary(&ops, Self::unary)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let at = self.peek().at;
        if self.eat("!") {
            let operand = self.nested(at, Self::unary)?;
            return Node::new(Kind::Not(Box::new(operand)), at);
        }
        if self.eat("-") {
            let operand = self.nested(at, Self::unary)?;
            return Node::new(Kind::Neg(Box::new(operand)), at);
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Node, ParseError> {
        let mut node = self.primary()?;
        loop {
            let at = self.peek().at;
            if self.eat(".") {
                let token = self.next();
                let Tok::Ident(name) = token.tok else {
                    return Err(("expected a name after \".\"".to_owned(), token.at));
                };
                node = Node::new(Kind::Member(Box::new(node), name), at)?;
            } else if self.eat("[") {
                let key = self.expr()?;
                self.expect("]", "\"]\"")?;
                node = Node::new(Kind::Index(Box::new(node), Box::new(key)), at)?;
            } else {
                return Ok(node);
            }
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let token = self.next();
        let at = token.at;
        let kind = match token.tok {
            Tok::Num(n) => Kind::Literal(Value::Number(n)),
            Tok::Str(s) => Kind::Literal(Value::String(s)),
            Tok::Ident(name) => match name.as_str() {
                "true" => Kind::Literal(Value::Bool(true)),
                "false" => Kind::Literal(Value::Bool(false)),
                "null" => Kind::Literal(Value::Null),
                _ if self.eat("(") => {
                    Kind::Call(name, self.nested(at, |p| p.list(")", Self::expr))?)
                }
                _ => Kind::Ident(name),
            },
            Tok::Punct("(") => {
                let inner = self.expr()?;
                self.expect(")", "\")\"")?;
                return Ok(inner);
            }
            Tok::Punct("[") => Kind::Array(self.nested(at, |p| p.list("]", Self::expr))?),
            Tok::Punct("{") => Kind::Object(self.nested(at, |p| p.list("}", Self::entry))?),
            Tok::End => return Err(("expected an expression".to_owned(), at)),
            other => {
                return Err((
                    format!("expected an expression, found {}", describe(&other)),
                    at,
                ));
            }
        };
        Node::new(kind, at)
    }

    /// Comma-separated items up to `close` (the opening token is already read).
    fn list<T>(
        &mut self,
        close: &str,
        item: fn(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",", &format!("\",\" or {close:?}"))?;
        }
    }

    fn entry(&mut self) -> Result<(String, Node), ParseError> {
        let token = self.next();
        let key = match token.tok {
            Tok::Ident(name) => name,
            Tok::Str(s) => s,
            other => {
                return Err((
                    format!("expected a key, found {}", describe(&other)),
                    token.at,
                ));
            }
        };
        self.expect(":", "\":\" after a key")?;
        Ok((key, self.expr()?))
    }
}

// ---- evaluation ------------------------------------------------------------------------

/// A value being computed: borrowed from the scope while it is a plain read, with the path it
/// was read at (whose sensitivity is decided once the value is used).
struct Val<'s> {
    value: Cow<'s, Value>,
    sensitive: bool,
    path: Option<Vec<String>>,
}

impl<'s> Val<'s> {
    fn computed(value: Value, sensitive: bool) -> Self {
        Self {
            value: Cow::Owned(value),
            sensitive,
            path: None,
        }
    }
}

enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(n: &Number) -> Self {
        match n.as_i64() {
            Some(i) => Self::Int(i),
            None => Self::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    fn float(&self) -> f64 {
        match *self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }
}

fn float_value(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "the result is not a finite number".to_owned())
}

fn arithmetic(op: BinOp, a: &Number, b: &Number) -> Result<Value, String> {
    let (a, b) = (Num::of(a), Num::of(b));
    if let (Num::Int(x), Num::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let exact = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div if y == 0 => return Err("division by zero".to_owned()),
            BinOp::Div if x.checked_rem(y) == Some(0) => x.checked_div(y),
            BinOp::Rem if y == 0 => return Err("division by zero".to_owned()),
            BinOp::Rem => x.checked_rem(y),
            _ => None,
        };
        if let Some(result) = exact {
            return Ok(Value::from(result));
        }
    }
    let (x, y) = (a.float(), b.float());
    float_value(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div | BinOp::Rem if y == 0.0 => return Err("division by zero".to_owned()),
        BinOp::Div => x / y,
        _ => x % y,
    })
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    match (Num::of(a), Num::of(b)) {
        (Num::Int(x), Num::Int(y)) => x == y,
        (x, y) => x.float() == y.float(),
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
fn deep_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| deep_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| deep_equal(x, y)))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Num::of(x), Num::of(y)) {
            (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
            (x, y) => x.float().partial_cmp(&y.float()),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn to_number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        Value::Bool(b) => Some(Value::from(i64::from(*b))),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .map(Value::from)
                .or_else(|| s.parse::<f64>().ok().and_then(|f| float_value(f).ok()))
        }
        _ => None,
    }
}

struct Evaluator<'s> {
    scope: &'s Scope,
}

impl<'s> Evaluator<'s> {
    /// The value and whether it is sensitive, deciding a plain read's sensitivity by its path.
    fn settle(&self, val: Val<'s>) -> (Cow<'s, Value>, bool) {
        let from_path = val
            .path
            .as_deref()
            .is_some_and(|path| self.scope.is_sensitive(path));
        (val.value, val.sensitive || from_path)
    }

    fn eval_settled(&self, node: &Node) -> Result<(Cow<'s, Value>, bool), ExprError> {
        let val = self.eval(node)?;
        Ok(self.settle(val))
    }

    fn eval(&self, node: &Node) -> Result<Val<'s>, ExprError> {
        match &node.kind {
            Kind::Literal(value) => Ok(Val::computed(value.clone(), false)),
            Kind::Ident(name) => match self.scope.values.get(name) {
                Some(value) => Ok(Val {
                    value: Cow::Borrowed(value),
                    sensitive: false,
                    path: Some(vec![name.clone()]),
                }),
                None => Err(ExprError::eval(name, "attribute not found")),
            },
            Kind::Member(base, name) => {
                let base = self.eval(base)?;
                attribute(base, name, false)
            }
            Kind::Index(base, key) => {
                let base = self.eval(base)?;
                let (key, key_sensitive) = self.eval_settled(key)?;
                index(base, &key, key_sensitive)
            }
            Kind::Call(name, args) => self.call(name, args),
            Kind::Array(items) => {
                let mut sensitive = false;
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    let (value, item_sensitive) = self.eval_settled(item)?;
                    sensitive |= item_sensitive;
                    values.push(value.into_owned());
                }
                Ok(Val::computed(Value::Array(values), sensitive))
            }
            Kind::Object(entries) => {
                let mut sensitive = false;
                let mut values = Map::new();
                for (key, item) in entries {
                    let (value, item_sensitive) = self.eval_settled(item)?;
                    sensitive |= item_sensitive;
                    values.insert(key.clone(), value.into_owned());
                }
                Ok(Val::computed(Value::Object(values), sensitive))
            }
            Kind::Not(operand) => {
                let (value, sensitive) = self.eval_settled(operand)?;
                Ok(Val::computed(Value::Bool(!truthy(&value)), sensitive))
            }
            Kind::Neg(operand) => {
                let (value, sensitive) = self.eval_settled(operand)?;
                let negated = match &*value {
                    Value::Number(n) => arithmetic(BinOp::Sub, &Number::from(0), n),
                    other => Err(format!("cannot negate {}", type_name(other))),
                };
                let negated = negated.map_err(|what| ExprError::eval("-", &what))?;
                Ok(Val::computed(negated, sensitive))
            }
            Kind::Binary(op, lhs, rhs) => self.binary(*op, lhs, rhs),
        }
    }

    fn binary(&self, op: BinOp, lhs: &Node, rhs: &Node) -> Result<Val<'s>, ExprError> {
        let (a, a_sensitive) = self.eval_settled(lhs)?;
        if matches!(op, BinOp::Or | BinOp::And) {
            // Short-circuit, returning an operand; the choice depended on the left one.
            if truthy(&a) == (op == BinOp::Or) {
                return Ok(Val {
                    value: a,
                    sensitive: a_sensitive,
                    path: None,
                });
            }
            let (b, b_sensitive) = self.eval_settled(rhs)?;
            return Ok(Val {
                value: b,
                sensitive: a_sensitive || b_sensitive,
                path: None,
            });
        }
        let (b, b_sensitive) = self.eval_settled(rhs)?;
        let sensitive = a_sensitive || b_sensitive;
        let (a, b) = (&*a, &*b);
        let types = || format!("{} and {}", type_name(a), type_name(b));
        let result = match op {
            BinOp::Eq => Ok(Value::Bool(deep_equal(a, b))),
            BinOp::Ne => Ok(Value::Bool(!deep_equal(a, b))),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => match compare(a, b) {
                Some(ordering) => Ok(Value::Bool(match op {
                    BinOp::Lt => ordering.is_lt(),
                    BinOp::Le => ordering.is_le(),
                    BinOp::Gt => ordering.is_gt(),
                    _ => ordering.is_ge(),
                })),
                None => Err(format!("cannot compare {}", types())),
            },
            BinOp::Add => match (a, b) {
                (Value::Number(x), Value::Number(y)) => arithmetic(op, x, y),
                (Value::String(_), _) | (_, Value::String(_)) => {
                    Ok(Value::String(stringify(a) + &stringify(b)))
                }
                (Value::Array(x), Value::Array(y)) => {
                    Ok(Value::Array(x.iter().chain(y).cloned().collect()))
                }
                _ => Err(format!("cannot add {}", types())),
            },
            _ => match (a, b) {
                (Value::Number(x), Value::Number(y)) => arithmetic(op, x, y),
                _ => {
                    let verb = match op {
                        BinOp::Sub => "subtract",
                        BinOp::Mul => "multiply",
                        BinOp::Div => "divide",
                        _ => "take the remainder of",
                    };
                    Err(format!("cannot {verb} {}", types()))
                }
            },
        };
        let value = result.map_err(|what| ExprError::eval(op.text(), &what))?;
        Ok(Val::computed(value, sensitive))
    }

    fn call(&self, name: &str, args: &[Node]) -> Result<Val<'s>, ExprError> {
        let at = format!("{name}()");
        if !matches!(name, "str" | "num" | "bool") {
            return Err(ExprError::eval(&at, "unknown function"));
        }
        let [arg] = args else {
            let what = format!("expects 1 argument, got {}", args.len());
            return Err(ExprError::eval(&at, &what));
        };
        let (value, sensitive) = self.eval_settled(arg)?;
        let result = match name {
            "str" => Value::String(stringify(&value)),
            "bool" => Value::Bool(truthy(&value)),
            _ => to_number(&value).ok_or_else(|| {
                let what = format!("cannot convert {} to a number", type_name(&value));
                ExprError::eval(&at, &what)
            })?,
        };
        Ok(Val::computed(result, sensitive))
    }
}

/// `.name` (or `["name"]`) on a value.
fn attribute<'s>(base: Val<'s>, name: &str, key_sensitive: bool) -> Result<Val<'s>, ExprError> {
    let at = if key_sensitive {
        "[sensitive]".to_owned()
    } else {
        format!(".{name}")
    };
    let value = match base.value {
        Cow::Borrowed(Value::Object(entries)) => entries.get(name).map(Cow::Borrowed),
        Cow::Owned(Value::Object(mut entries)) => entries.remove(name).map(Cow::Owned),
        other => {
            let what = format!("cannot access attribute of {}", type_name(&other));
            return Err(ExprError::eval(&at, &what));
        }
    };
    let value = value.ok_or_else(|| ExprError::eval(&at, "attribute not found"))?;
    Ok(Val {
        value,
        sensitive: base.sensitive || key_sensitive,
        path: base.path.map(|mut path| {
            path.push(name.to_owned());
            path
        }),
    })
}

/// `[key]` on a value: an object's key or an array's element.
fn index<'s>(base: Val<'s>, key: &Value, key_sensitive: bool) -> Result<Val<'s>, ExprError> {
    let n = match key {
        Value::String(name) => return attribute(base, name, key_sensitive),
        Value::Number(n) => n,
        other => {
            let at = if key_sensitive {
                "[sensitive]".to_owned()
            } else {
                format!("[{other}]")
            };
            let what = format!("cannot use {} as an index", type_name(other));
            return Err(ExprError::eval(&at, &what));
        }
    };
    let at = if key_sensitive {
        "[sensitive]".to_owned()
    } else {
        format!("[{}]", format_number(n))
    };
    let position = match Num::of(n) {
        Num::Int(i) => Some(i),
        Num::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Some(f as i64),
        Num::Float(_) => None,
    };
    let Some(position) = position else {
        return Err(ExprError::eval(&at, "an index must be an integer"));
    };
    let slot = usize::try_from(position).ok();
    let value = match base.value {
        Cow::Borrowed(Value::Array(items)) => slot.and_then(|i| items.get(i)).map(Cow::Borrowed),
        Cow::Owned(Value::Array(mut items)) => slot
            .filter(|&i| i < items.len())
            .map(|i| Cow::Owned(items.swap_remove(i))),
        other => {
            let what = format!("cannot index {} with a number", type_name(&other));
            return Err(ExprError::eval(&at, &what));
        }
    };
    let value = value.ok_or_else(|| ExprError::eval(&at, "index out of range"))?;
    Ok(Val {
        value,
        sensitive: base.sensitive || key_sensitive,
        path: base.path.map(|mut path| {
            path.push(position.to_string());
            path
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut scope = Scope::new();
        scope.set(
            "inputs",
            json!({
                "target": "world",
                "count": 3,
                "list": [1, "two", {"three": 3}],
                "obj": {"a b": 1, "nested": {"x": true}},
                "my-input": "dashed",
                "user": "alice",
                "password": "hunter2",
                "index": 1,
            }),
        );
        scope.set("env", json!({"HOME": "/root"}));
        scope.set("job", json!({"CI_JOB_ID": "42"}));
        scope.set(
            "steps",
            json!({"greet": {"outputs": {"greeting": "hello"}}}),
        );
        scope.mark_sensitive(&["inputs", "password"]);
        scope
    }

    fn eval(template: &str) -> Value {
        expand_str(template, &scope()).unwrap().value
    }

    fn error(template: &str) -> String {
        expand_str(template, &scope()).unwrap_err().to_string()
    }

    #[test]
    fn a_lone_expression_keeps_its_native_type() {
        assert_eq!(eval("${{ 3 }}"), json!(3));
        assert!(eval("${{inputs.count}}").is_i64());
        assert_eq!(eval("${{ 1.5 }}"), json!(1.5));
        assert_eq!(eval("${{ true }}"), json!(true));
        assert_eq!(eval("${{ null }}"), json!(null));
        assert_eq!(eval("${{ inputs.list }}"), json!([1, "two", {"three": 3}]));
        assert_eq!(eval("${{ inputs.obj.nested }}"), json!({"x": true}));
        assert_eq!(eval("${{ 'text' }}"), json!("text"));
        // Any character outside makes it a string.
        assert_eq!(eval(" ${{ 3 }}"), json!(" 3"));
        assert_eq!(eval("${{ 1 }}${{ 2 }}"), json!("12"));
    }

    #[test]
    fn splicing_stringifies_results() {
        assert_eq!(
            eval("a ${{ 1 + 2 }} b ${{ 1.5 }} ${{ true }} [${{ null }}] ${{ [1, 'x'] }} ${{ {a: 1} }}"),
            json!("a 3 b 1.5 true [] [1,\"x\"] {\"a\":1}")
        );
        assert_eq!(eval("${{ 1.5 + 1.5 }}x"), json!("3x"));
        assert_eq!(eval("${{ 1.5 + 1.5 }}"), json!(3.0));
        assert_eq!(eval("plain text"), json!("plain text"));
    }

    #[test]
    fn a_backslash_escapes_an_expression() {
        assert_eq!(
            eval("\\${{ inputs.nope }} and ${{ 1 }}"),
            json!("${{ inputs.nope }} and 1")
        );
        assert_eq!(eval("\\${{ \"}}\" }}!"), json!("${{ \"}}\" }}!"));
        assert_eq!(eval("\\${{ open"), json!("${{ open"));
        assert_eq!(eval("\\${{ 1 }}"), json!("${{ 1 }}"));
        assert_eq!(eval("\\${{ it's }} ${{ 1 }}"), json!("${{ it's }} 1"));
    }

    #[test]
    fn an_unterminated_expression_is_an_error() {
        assert_eq!(
            error("ab ${{ 1 + 2"),
            "parsing template: expected \"}}\" to close the \"${{\" at offset 3"
        );
        assert!(expand_str("${{ 'a }}", &scope()).is_err());
        assert!(expand_str("${{", &scope()).is_err());
        assert!(expand_str("${{}", &scope()).is_err());
    }

    #[test]
    fn member_and_index_access() {
        assert_eq!(eval("${{ inputs.list[1] }}"), json!("two"));
        assert_eq!(eval("${{ inputs.list[2].three }}"), json!(3));
        assert_eq!(eval("${{ inputs['target'] }}"), json!("world"));
        assert_eq!(eval("${{ inputs.obj[\"a b\"] }}"), json!(1));
        assert_eq!(eval("${{ inputs[\"my-input\"] }}"), json!("dashed"));
        assert_eq!(eval("${{ inputs.list[inputs.index] }}"), json!("two"));
        assert_eq!(eval("${{ [10, 20][1] }}"), json!(20));
        assert_eq!(eval("${{ {a: {b: 2} }.a.b }}"), json!(2));
        assert_eq!(
            error("${{ inputs.list[3] }}"),
            "evaluating expression failed at \"[3]\": index out of range"
        );
        assert_eq!(
            error("${{ inputs.list[-1] }}"),
            "evaluating expression failed at \"[-1]\": index out of range"
        );
        assert_eq!(
            error("${{ inputs.target.x }}"),
            "evaluating expression failed at \".x\": cannot access attribute of string"
        );
        assert_eq!(
            error("${{ inputs.obj[0] }}"),
            "evaluating expression failed at \"[0]\": cannot index object with a number"
        );
        // `-` is not part of a name.
        assert_eq!(
            error("${{ inputs.my-input }}"),
            "evaluating expression failed at \".my\": attribute not found"
        );
    }

    #[test]
    fn a_missing_attribute_is_named_exactly() {
        assert_eq!(
            error("${{ env.FLIN_FLAN_FLON }}"),
            "evaluating expression failed at \".FLIN_FLAN_FLON\": attribute not found"
        );
        assert_eq!(
            error("${{ env[\"FLIN_FLAN_FLON\"] }}"),
            "evaluating expression failed at \".FLIN_FLAN_FLON\": attribute not found"
        );
        assert_eq!(
            error("${{ foo }}"),
            "evaluating expression failed at \"foo\": attribute not found"
        );
    }

    #[test]
    fn step_outputs_and_concatenation() {
        assert_eq!(eval("${{ steps.greet.outputs.greeting }}"), json!("hello"));
        assert_eq!(
            eval("${{ inputs.target + \"-\" + job.CI_JOB_ID }}"),
            json!("world-42")
        );
        assert_eq!(eval("${{ 'n' + 1 + 2 }}"), json!("n12"));
        assert_eq!(eval("${{ 1 + 2 + 'n' }}"), json!("3n"));
        assert_eq!(eval("${{ [1] + [2, 3] }}"), json!([1, 2, 3]));
        assert_eq!(
            error("${{ true + 1 }}"),
            "evaluating expression failed at \"+\": cannot add boolean and number"
        );
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(eval("${{ 1 + 2 * 3 }}"), json!(7));
        assert_eq!(eval("${{ (1 + 2) * 3 }}"), json!(9));
        assert_eq!(eval("${{ 10 - 4 - 3 }}"), json!(3));
        assert_eq!(eval("${{ 7 / 2 }}"), json!(3.5));
        assert!(eval("${{ 6 / 2 }}").is_i64());
        assert_eq!(eval("${{ 7 % 3 }}"), json!(1));
        assert_eq!(eval("${{ -2 * 3 }}"), json!(-6));
        assert_eq!(eval("${{ 2 * -inputs.count }}"), json!(-6));
        assert_eq!(eval("${{ 0.5 * 3 }}"), json!(1.5));
        assert_eq!(
            eval("${{ 9223372036854775807 + 1 }}"),
            json!(9223372036854775808.0)
        );
        assert_eq!(
            error("${{ 1 / 0 }}"),
            "evaluating expression failed at \"/\": division by zero"
        );
        assert_eq!(
            error("${{ 1 % 0.0 }}"),
            "evaluating expression failed at \"%\": division by zero"
        );
        assert_eq!(
            error("${{ 2 - true }}"),
            "evaluating expression failed at \"-\": cannot subtract number and boolean"
        );
        assert_eq!(
            error("${{ -'a' }}"),
            "evaluating expression failed at \"-\": cannot negate string"
        );
    }

    #[test]
    fn comparisons() {
        assert_eq!(eval("${{ 1 == 1.0 }}"), json!(true));
        assert_eq!(eval("${{ 1 != 2 }}"), json!(true));
        assert_eq!(eval("${{ [1, {a: 2}] == [1.0, {a: 2}] }}"), json!(true));
        assert_eq!(eval("${{ 'a' == 1 }}"), json!(false));
        assert_eq!(eval("${{ 'a' < 'b' }}"), json!(true));
        assert_eq!(eval("${{ 2 >= 2 && 2 <= 2 && 3 > 2.5 }}"), json!(true));
        assert_eq!(eval("${{ 1 + 1 == 2 }}"), json!(true));
        assert_eq!(
            error("${{ 1 < 'a' }}"),
            "evaluating expression failed at \"<\": cannot compare number and string"
        );
    }

    #[test]
    fn logical_operators_return_an_operand() {
        assert_eq!(eval("${{ null || 'd' }}"), json!("d"));
        assert_eq!(eval("${{ 'a' || 'b' }}"), json!("a"));
        assert_eq!(eval("${{ 0 && 'x' }}"), json!(0));
        assert_eq!(eval("${{ 1 && 'y' }}"), json!("y"));
        assert_eq!(eval("${{ [] || {} }}"), json!({}));
        // Short-circuit: the other side is not evaluated.
        assert_eq!(eval("${{ true || nope.x }}"), json!(true));
        assert_eq!(eval("${{ false && nope.x }}"), json!(false));
        assert_eq!(eval("${{ !0 }}"), json!(true));
        assert_eq!(eval("${{ !'a' }}"), json!(false));
        assert_eq!(eval("${{ !![] }}"), json!(false));
        assert_eq!(eval("${{ !inputs.obj }}"), json!(false));
    }

    #[test]
    fn functions() {
        assert_eq!(eval("${{ str(3) }}"), json!("3"));
        assert_eq!(eval("${{ str(1.5) }}"), json!("1.5"));
        assert_eq!(eval("${{ str([1, true]) }}"), json!("[1,true]"));
        assert_eq!(eval("${{ str(null) }}"), json!(""));
        assert_eq!(eval("${{ num('42') }}"), json!(42));
        assert_eq!(eval("${{ num(' -1.5 ') }}"), json!(-1.5));
        assert_eq!(eval("${{ num(true) + num(false) }}"), json!(1));
        assert_eq!(eval("${{ num(job.CI_JOB_ID) + 1 }}"), json!(43));
        assert_eq!(eval("${{ bool('') }}"), json!(false));
        assert_eq!(eval("${{ bool({a: 1}) }}"), json!(true));
        assert_eq!(
            error("${{ num('x') }}"),
            "evaluating expression failed at \"num()\": cannot convert string to a number"
        );
        assert_eq!(
            error("${{ num([]) }}"),
            "evaluating expression failed at \"num()\": cannot convert array to a number"
        );
        assert_eq!(
            error("${{ nope(1) }}"),
            "evaluating expression failed at \"nope()\": unknown function"
        );
        assert_eq!(
            error("${{ str(1, 2) }}"),
            "evaluating expression failed at \"str()\": expects 1 argument, got 2"
        );
    }

    #[test]
    fn literals() {
        assert_eq!(
            eval("${{ {a: 1, \"b c\": [true, null, 'x'], d: {} } }}"),
            json!({"a": 1, "b c": [true, null, "x"], "d": {}})
        );
        assert_eq!(eval("${{ [] }}"), json!([]));
        assert_eq!(eval("${{ [inputs.count, 1e2] }}"), json!([3, 100.0]));
        assert_eq!(
            eval("${{ 'it\\'s \"q\" \\\\ \\n\\t' }}"),
            json!("it's \"q\" \\ \n\t")
        );
        assert_eq!(eval("${{ \"a}}b\" }}"), json!("a}}b"));
        assert_eq!(eval("x${{ 'a}}b' }}y"), json!("xa}}by"));
        assert_eq!(eval("${{ 'é' + \"ü\" }}"), json!("éü"));
    }

    #[test]
    fn parse_errors_say_what_was_expected_and_where() {
        assert_eq!(
            error("${{ inputs. }}"),
            "parsing expression \"inputs.\": expected a name after \".\" at offset 7"
        );
        assert_eq!(
            error("${{ }}"),
            "parsing expression \"\": expected an expression at offset 0"
        );
        assert_eq!(
            error("${{ 1 + }}"),
            "parsing expression \"1 +\": expected an expression at offset 3"
        );
        assert_eq!(
            error("${{ (1 }}"),
            "parsing expression \"(1\": expected \")\", found the end of the expression at offset 2"
        );
        assert_eq!(
            error("${{ 1 2 }}"),
            "parsing expression \"1 2\": unexpected number 2 at offset 2"
        );
        assert_eq!(
            error("${{ [1 2] }}"),
            "parsing expression \"[1 2]\": expected \",\" or \"]\", found number 2 at offset 3"
        );
        assert_eq!(
            error("${{ a = b }}"),
            "parsing expression \"a = b\": expected \"==\", found \"=\" at offset 2"
        );
        assert_eq!(
            error("${{ 'x\\q' }}"),
            "parsing expression \"'x\\\\q'\": unknown escape \"\\q\" at offset 2"
        );
        assert_eq!(
            error("${{ 12abc }}"),
            "parsing expression \"12abc\": invalid number \"12abc\" at offset 0"
        );
        assert_eq!(
            error("${{ {1: 2} }}"),
            "parsing expression \"{1: 2}\": expected a key, found number 1 at offset 1"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let parens = format!("${{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
        assert!(error(&parens).contains("nested too deeply"));
        let chain = format!("${{{{ 1{} }}}}", " + 1".repeat(5000));
        assert!(error(&chain).contains("nested too deeply"));
        let nots = format!("${{{{ {}1 }}}}", "!".repeat(5000));
        assert!(error(&nots).contains("nested too deeply"));
        assert_eq!(
            eval(&format!("${{{{ 1{} }}}}", " + 1".repeat(100))),
            json!(101)
        );
    }

    #[test]
    fn sensitivity_is_carried_through_operations() {
        let scope = scope();
        let sensitive = |template: &str| expand_str(template, &scope).unwrap().sensitive;
        assert!(!sensitive("${{ inputs.user }}"));
        assert!(sensitive("${{ inputs.password }}"));
        assert!(sensitive("${{ inputs.user }}:${{ inputs.password }}"));
        assert!(sensitive("${{ inputs.user + ':' + inputs.password }}"));
        assert!(sensitive("${{ str(inputs.password) }}"));
        assert!(sensitive("${{ inputs.password == 'x' }}"));
        assert!(sensitive("${{ inputs['pass' + 'word'] }}"));
        assert!(sensitive("${{ [inputs.password] }}"));
        // An error does not show a sensitive key.
        assert_eq!(
            expand_str("${{ env[inputs.password] }}", &scope)
                .unwrap_err()
                .message(),
            "evaluating expression failed at \"[sensitive]\": attribute not found"
        );
        // Reading the whole context reads the secret too.
        assert!(sensitive("${{ inputs }}"));
        assert!(!sensitive("${{ inputs.obj }}"));
        assert!(!sensitive("plain"));

        let expanded = expand_value(&json!(["plain", "${{ inputs.password }}"]), &scope).unwrap();
        assert_eq!(expanded.value, json!(["plain", "hunter2"]));
        assert!(expanded.sensitive);
        assert!(format!("{expanded:?}").contains("[MASKED]"));
        assert!(!format!("{expanded:?}").contains("hunter2"));
        let expanded = expand_value(&json!(["plain", "${{ inputs.user }}"]), &scope).unwrap();
        assert!(!expanded.sensitive);
    }

    #[test]
    fn expand_value_leaves_object_keys_alone() {
        let expanded = expand_value(
            &json!({"${{ inputs.user }}": "${{ inputs.user }}", "n": 1, "deep": [{"k": "${{ 2 }}"}]}),
            &scope(),
        )
        .unwrap();
        assert_eq!(
            expanded.value,
            json!({"${{ inputs.user }}": "alice", "n": 1, "deep": [{"k": 2}]})
        );
        assert!(!expanded.sensitive);
        assert!(expand_value(&json!({"a": ["${{ nope }}"]}), &scope()).is_err());
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn expand_str_never_panics(
            template in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                proptest::collection::vec(
                    proptest::prop_oneof![
                        proptest::strategy::Just("${{".to_owned()),
                        proptest::strategy::Just("}}".to_owned()),
                        proptest::strategy::Just("\\".to_owned()),
                        proptest::strategy::Just("\"".to_owned()),
                        proptest::strategy::Just("'".to_owned()),
                        proptest::strategy::Just("inputs".to_owned()),
                        proptest::strategy::Just(".".to_owned()),
                        proptest::strategy::Just("[".to_owned()),
                        proptest::strategy::Just("(".to_owned()),
                        "[ -~]{0,4}",
                    ],
                    0..24,
                ).prop_map(|parts| parts.concat()),
            ]
        ) {
            let result = expand_str(&template, &scope());
            if !template.contains("${{") {
                proptest::prop_assert_eq!(
                    result,
                    Ok(Expanded { value: Value::String(template.clone()), sensitive: false })
                );
            }
        }
    }
}

"""A small, safe rule language for turning engagement columns into labels and weights.

Grammar (keywords are case-insensitive, nothing is passed to `eval`):

    rule       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" rule ")" | comparison
    comparison := COLUMN ("==" | "!=" | ">" | ">=" | "<" | "<=") LITERAL
                | COLUMN ["not"] "in" "(" LITERAL ("," LITERAL)* ")"
    LITERAL    := number (42, -1.5) | string ('Y' or "Y")

Semantics, on a table of rows:
- A comparison with a number reads the column as numbers; a value that is not a number is an
  error (not silently false), so a typo'd column type is caught.
- A comparison with a string compares the column's text (`True` reads as "True").
- A missing value (NULL, NaN, empty CSV cell) satisfies no comparison, `!=` included, like SQL.

Example: `likes > 0 or saved == 'Y' or view_count >= 3`.

A rule runs two ways with the same answers: `Rule.evaluate` on a pandas chunk (PostgreSQL), and
`Rule.to_sql` as a DuckDB expression over a whole file (CSV, Parquet), so that a 25M-row log is
labelled without turning its columns into Python objects. The SQL keeps the two-valued logic above:
each comparison is `COALESCE(..., false)`, so `not` of a comparison on a missing value is true,
where SQL's NULL would stay NULL.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfrs_model.errors import DataError

_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<string>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>==|!=|>=|<=|>|<|\(|\)|,)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
_KEYWORDS = ("and", "or", "not", "in")
_COMPARE: dict[str, Callable] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

_SQL_COMPARE = {"==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_SQL_NUMBERS = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
)

Literal = float | str


def quote_identifier(name: str) -> str:
    """`name` as a DuckDB identifier, whatever characters a source column name holds."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: Literal) -> str:
    """`value` as a DuckDB literal; numbers go through text so `1e999` stays infinity."""
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"
    return "'" + value.replace("'", "''") + "'"


def number_error(rule: str, column: str, value: object) -> DataError:
    """The error for text where a rule compares a column with a number."""
    return DataError(
        f"rule {rule!r}: column {column!r} is compared with a number but holds "
        f"{value!r}; compare it with a string ('...') instead"
    )


def _is_number_type(sql_type: str) -> bool:
    return sql_type in _SQL_NUMBERS or sql_type.startswith("DECIMAL")


def _sql_value(column: str, sql_type: str) -> str:
    """The column with NaN as NULL: pandas counts NaN as missing, DuckDB as a number."""
    name = quote_identifier(column)
    if sql_type in ("FLOAT", "DOUBLE"):
        return f"(CASE WHEN isnan({name}) THEN NULL ELSE {name} END)"
    return name


def _sql_text(column: str, sql_type: str) -> str:
    """The column as the text pandas' `astype(str)` gives (`True`, not DuckDB's `true`)."""
    value = _sql_value(column, sql_type)
    if sql_type == "VARCHAR":
        return value
    if sql_type == "BOOLEAN":
        return f"(CASE WHEN {value} THEN 'True' ELSE 'False' END)"
    return f"CAST({value} AS VARCHAR)"


def _sql_number(column: str, sql_type: str) -> str:
    """The column as DOUBLE; text that is no number becomes NULL (`Rule.number_checks` finds it)."""
    if _is_number_type(sql_type) or sql_type == "BOOLEAN":
        return f"CAST({_sql_value(column, sql_type)} AS DOUBLE)"
    number = f"TRY_CAST({_sql_text(column, sql_type)} AS DOUBLE)"
    return f"(CASE WHEN isnan({number}) THEN NULL ELSE {number} END)"


@dataclass(frozen=True)
class Comparison:
    """`column op value`, or `column [not] in values` (`op` "in"/"not in", `value` a tuple)."""

    column: str
    op: str
    value: Literal | tuple[Literal, ...]

    def evaluate(self, frame: pd.DataFrame, rule: str) -> np.ndarray:
        values = frame[self.column]
        literals = self.value if isinstance(self.value, tuple) else (self.value,)
        present = values.notna().to_numpy()
        if isinstance(literals[0], float):
            numeric = pd.to_numeric(values, errors="coerce")
            bad = numeric.isna().to_numpy() & present
            if bad.any():
                raise number_error(rule, self.column, values[bad].iloc[0])
            column = numeric.to_numpy(dtype=float, na_value=np.nan)
        else:
            column = values.astype(str).to_numpy(dtype=object)
        if self.op in ("in", "not in"):
            result = np.isin(column, np.array(literals, dtype=object)) != (self.op == "not in")
        else:
            result = np.asarray(_COMPARE[self.op](column, literals[0]), dtype=bool)
        return result & present

    @property
    def numeric(self) -> bool:
        """Whether the column is compared with numbers (else with text)."""
        literals = self.value if isinstance(self.value, tuple) else (self.value,)
        return isinstance(literals[0], float)

    def to_sql(self, types: Mapping[str, str]) -> str:
        literals = self.value if isinstance(self.value, tuple) else (self.value,)
        sql_type = types[self.column]
        if self.numeric:
            column = _sql_number(self.column, sql_type)
        else:
            column = _sql_text(self.column, sql_type)
        if self.op in ("in", "not in"):
            values = ", ".join(quote_literal(v) for v in literals)
            test = f"{column} {self.op.upper()} ({values})"
        else:
            test = f"{column} {_SQL_COMPARE[self.op]} {quote_literal(literals[0])}"
        return f"COALESCE({test}, false)"


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, frame: pd.DataFrame, rule: str) -> np.ndarray:
        return ~self.operand.evaluate(frame, rule)

    def to_sql(self, types: Mapping[str, str]) -> str:
        return f"(NOT {self.operand.to_sql(types)})"


@dataclass(frozen=True)
class BoolOp:
    """`and` / `or` over two or more operands."""

    op: str
    operands: tuple[Node, ...]

    def evaluate(self, frame: pd.DataFrame, rule: str) -> np.ndarray:
        combine = np.logical_and if self.op == "and" else np.logical_or
        result = self.operands[0].evaluate(frame, rule)
        for operand in self.operands[1:]:
            result = combine(result, operand.evaluate(frame, rule))
        return result

    def to_sql(self, types: Mapping[str, str]) -> str:
        joined = f" {self.op.upper()} ".join(o.to_sql(types) for o in self.operands)
        return f"({joined})"


Node = Comparison | Not | BoolOp


@dataclass(frozen=True)
class Rule:
    """A parsed rule: `evaluate(frame)` gives one bool per row. Build it with `parse_rule`."""

    text: str
    root: Node

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        """The rule's comparisons, left to right."""
        found: list[Comparison] = []

        def visit(node: Node) -> None:
            if isinstance(node, Comparison):
                found.append(node)
            elif isinstance(node, Not):
                visit(node.operand)
            else:
                for operand in node.operands:
                    visit(operand)

        visit(self.root)
        return tuple(found)

    @property
    def columns(self) -> tuple[str, ...]:
        """Source columns the rule reads, in order of first use."""
        return tuple(dict.fromkeys(c.column for c in self.comparisons))

    def evaluate(self, frame: pd.DataFrame) -> np.ndarray:
        """`[len(frame)]` bool: which rows satisfy the rule.

        Raises:
          DataError: a column the rule reads is missing, or holds text where a number is needed.
        """
        self._require(list(frame.columns))
        return self.root.evaluate(frame, self.text)

    def to_sql(self, types: Mapping[str, str]) -> str:
        """A DuckDB boolean expression, never NULL, true on the rows `evaluate` keeps.

        Args:
          types: DuckDB type name of every column of the table (`DESCRIBE`), by source name.

        Raises:
          DataError: a column the rule reads is missing.
        """
        self._require(list(types))
        return self.root.to_sql(types)

    def number_checks(self, types: Mapping[str, str]) -> dict[str, str]:
        """DuckDB conditions true on a value that is no number, for each column of the rule that
        is compared with numbers but not stored as numbers (what `evaluate` rejects)."""
        checks = {}
        for comparison in self.comparisons:
            sql_type = types[comparison.column]
            if comparison.numeric and not (_is_number_type(sql_type) or sql_type == "BOOLEAN"):
                text = _sql_text(comparison.column, sql_type)
                checks[comparison.column] = (
                    f"{text} IS NOT NULL AND {_sql_number(comparison.column, sql_type)} IS NULL"
                )
        return checks

    def _require(self, columns: list[str]) -> None:
        # Checked here, not left to DuckDB: its identifiers ignore case, the rules do not.
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise DataError(
                f"rule {self.text!r} reads column(s) {missing} that the table lacks; it has "
                f"{columns}"
            )


@dataclass(frozen=True)
class WeightRule:
    rule: Rule
    value: float


@dataclass(frozen=True)
class WeightConfig:
    """Weight of an interaction: the value of the first matching rule, else `default`."""

    default: float = 1.0
    rules: tuple[WeightRule, ...] = ()

    def evaluate(self, frame: pd.DataFrame) -> np.ndarray:
        """`[len(frame)]` float32 weights of the rows of `frame`."""
        weight = np.full(len(frame), self.default, dtype=np.float32)
        decided = np.zeros(len(frame), dtype=bool)
        for weight_rule in self.rules:
            hit = weight_rule.rule.evaluate(frame) & ~decided
            weight[hit] = weight_rule.value
            decided |= hit
        return weight

    def to_sql(self, types: Mapping[str, str]) -> str:
        """The weights as a DuckDB FLOAT expression (a CASE: the first matching rule wins)."""
        default = quote_literal(self.default)
        if not self.rules:
            return f"CAST({default} AS FLOAT)"
        cases = " ".join(
            f"WHEN {r.rule.to_sql(types)} THEN {quote_literal(r.value)}" for r in self.rules
        )
        return f"CAST(CASE {cases} ELSE {default} END AS FLOAT)"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokenize(text)
        self.position = 0

    def _error(self, message: str) -> DataError:
        return DataError(
            f"bad rule {self.text!r}: {message}; write comparisons such as "
            "\"likes > 0 or saved == 'Y'\" joined by and/or/not"
        )

    def _tokenize(self, text: str) -> list[tuple[str, str, int]]:
        tokens = []
        index = 0
        while index < len(text):
            if text[index:].strip() == "":
                break
            match = _TOKEN.match(text, index)
            if match is None or match.end() == index:
                stripped = len(text[index:]) - len(text[index:].lstrip())
                character = text[index + stripped]
                hint = " (use == to compare)" if character == "=" else ""
                raise self._error(f"unexpected {character!r} at position {index + stripped}{hint}")
            kind = match.lastgroup
            value = match.group(kind)
            start = match.start(kind)
            if kind == "name" and value.lower() in _KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append((kind, value, start))
            index = match.end()
        return tokens

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, kind: str, value: str | None = None) -> str:
        token = self._peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            wanted = value or kind
            found = "the end" if token is None else f"{token[1]!r} at position {token[2]}"
            raise self._error(f"expected {wanted}, found {found}")
        self.position += 1
        return token[1]

    def _accept(self, kind: str, value: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == kind and token[1] == value:
            self.position += 1
            return True
        return False

    def parse(self) -> Node:
        if not self.tokens:
            raise self._error("it is empty")
        node = self._or()
        token = self._peek()
        if token is not None:
            raise self._error(f"unexpected {token[1]!r} at position {token[2]}")
        return node

    def _or(self) -> Node:
        operands = [self._and()]
        while self._accept("keyword", "or"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def _and(self) -> Node:
        operands = [self._not()]
        while self._accept("keyword", "and"):
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def _not(self) -> Node:
        if self._accept("keyword", "not"):
            return Not(self._not())
        if self._accept("op", "("):
            node = self._or()
            self._take("op", ")")
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        column = self._take("name")
        negated = self._accept("keyword", "not")
        if negated or self._accept("keyword", "in"):
            if negated:
                self._take("keyword", "in")
            self._take("op", "(")
            values = [self._literal()]
            while self._accept("op", ","):
                values.append(self._literal())
            self._take("op", ")")
            if len({type(v) for v in values}) > 1:
                raise self._error(f"the values of {column} in (...) mix numbers and strings")
            return Comparison(column, "not in" if negated else "in", tuple(values))
        token = self._peek()
        if token is None or token[0] != "op" or token[1] not in _COMPARE:
            found = "the end" if token is None else f"{token[1]!r} at position {token[2]}"
            raise self._error(f"expected a comparison (== != > >= < <=) after {column}, {found}")
        self.position += 1
        value = self._literal()
        if isinstance(value, str) and token[1] not in ("==", "!="):
            raise self._error(f"strings compare only with == or != ({column} {token[1]} {value!r})")
        return Comparison(column, token[1], value)

    def _literal(self) -> Literal:
        token = self._peek()
        if token is None or token[0] not in ("number", "string"):
            found = "the end" if token is None else f"{token[1]!r} at position {token[2]}"
            raise self._error(f"expected a number or a quoted string, found {found}")
        self.position += 1
        return float(token[1]) if token[0] == "number" else token[1][1:-1]


def parse_rule(text: str) -> Rule:
    """Parses a rule (see the module docstring).

    Raises:
      DataError: the text is not a rule; the message shows where and what was expected.
    """
    if not isinstance(text, str):
        raise DataError(f'a rule must be a string such as "likes > 0", got {text!r}')
    return Rule(text=text, root=_Parser(text).parse())

"""OVN's match language (the `match` of an ACL or a logical flow): parsed into a syntax
tree, checked as OVN checks it, and compiled to OpenFlow flows, conjunctive matches
included.

    compiled = compile_acl_match('outport == @pg1 && ip4 && tcp.dst == {22, 80}', ctx)
    flows = compiled.flows(table=44, priority=2002, actions=(Resubmit(45),),
                           base_fields={"metadata": dp_key}, conj_id=next_id)

parse_match (memoised) gives the tree; errors are MatchSyntaxError, which names the column.
"""

from liveport.model.expr.compiler import (
    EMPTY_CONTEXT,
    CompiledMatch,
    MatchContext,
    compile_acl_match,
    describe,
    merge_flows,
)
from liveport.model.expr.errors import MatchSyntaxError
from liveport.model.expr.parser import parse_match
from liveport.model.expr.tree import Expr, address_sets, port_groups

__all__ = [
    "EMPTY_CONTEXT",
    "CompiledMatch",
    "Expr",
    "MatchContext",
    "MatchSyntaxError",
    "address_sets",
    "compile_acl_match",
    "describe",
    "merge_flows",
    "parse_match",
    "port_groups",
]

"""Rendering a placement's chosen content as an HTML fragment for ESI/SSI includes."""

from __future__ import annotations

import html

from ..decide.world import World


def render_fragment(world: World, placement: str, variant: str, content_ids: list[str]) -> str:
    """The placement's chosen items as an HTML fragment for an ESI include.

    Titles and fields are escaped; an item's `body` is HTML authored in the CMS and signed into the
    content snapshot, so it is inserted as is — that trust is the content pipeline's to keep.
    """
    parts = [
        f'<div class="edgeside" data-placement="{html.escape(placement)}" '
        f'data-variant="{html.escape(variant)}">'
    ]
    content = world.content
    for cid in content_ids:
        item = content.get(cid) if content is not None else None
        if item is None:
            continue
        parts.append(
            f'<div class="edgeside-item" data-id="{html.escape(item.id)}" '
            f'data-type="{html.escape(item.type)}">'
        )
        if item.body:
            parts.append(item.body)
        else:
            parts.append(f"<h3>{html.escape(item.title)}</h3>")
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)

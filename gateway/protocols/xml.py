"""XML from outside, read one way everywhere: `parse_untrusted`.

The gateway (SOAP envelopes, mtMessages, receipts), the simulators and the tests parse every XML
document they did not build themselves through this one function, so the hardening lives in one place:
- no entity expansion, no DTD loading or validation, no network access (XXE, billion laughs);
- any DOCTYPE is refused outright, even one that declares nothing: it is the door to the above;
- `huge_tree=False` keeps libxml2's own bounds (nesting depth 256, 10 MB per text node); the caller
  bounds the bytes (the gateway's body limits, the simulator's 10 MB envelope ceiling).
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from gateway.errors import XmlRefused

__all__ = ["XmlRefused", "parse_untrusted"]


def parse_untrusted(body: bytes, *, charset: str | None = None) -> etree._Element:
    """The root element of `body`; raises XmlRefused when it is not well-formed or carries a DOCTYPE.

    `charset`, from the request's Content-Type, decides how the bytes are read, over the XML
    declaration (RFC 7303 section 3; the vendor's Axis stack reads requests the same way).
    """
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                                 huge_tree=False, remove_blank_text=False, encoding=charset)
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"not well-formed XML: {exc.msg}") from None
    except LookupError:  # lxml's answer to a charset it does not know (raised by the parser's constructor)
        raise XmlRefused(f"unknown charset {charset!r}") from None
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XmlRefused("DOCTYPE declarations are not accepted")
    return root

"""The exception tree: drawn once in `gateway.errors`, and the drawing is the code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import gateway
from gateway import errors

_NODE = re.compile(r"^(?P<lead>[ │]*(?:[├└]── )?)(?P<name>[A-Z][A-Za-z]+)\b")


def drawn_tree() -> dict[str, str | None]:
    """Each class the module docstring draws, with the class drawn as its parent."""
    assert errors.__doc__ is not None
    drawing = errors.__doc__.split("\n\n")[1].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) along the current branch
    for line in drawing:
        match = _NODE.match(line)
        if match is None or (stack and "── " not in match["lead"]):
            continue  # a description line under a node
        column = len(match["lead"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((column, match["name"]))
    return parents


def coded_tree() -> dict[str, str | None]:
    """Each GatewayError class in `gateway.errors`, with its base in the tree."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.GatewayError) and c.__module__ == errors.__name__]
    return {c.__name__: next((b.__name__ for b in c.__bases__ if issubclass(b, errors.GatewayError)), None)
            for c in classes}


def test_the_docstring_draws_every_class_under_its_real_parent() -> None:
    assert drawn_tree() == coded_tree()


def test_every_exception_the_gateway_defines_is_in_the_one_tree() -> None:
    outside = []
    for module_info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if module_info.name == errors.__name__:
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and not name.startswith("_")):  # private: control flow inside one module
                outside.append(f"{module.__name__}.{name}")
    assert outside == []


def test_refused_requests_share_one_branch_and_stay_value_errors_where_they_were() -> None:
    request_errors = {errors.BodyRefused, errors.UnsafeTarget, errors.BadInput, errors.KeyReused,
                      errors.CertificateRefused, errors.TooManyFailedLogins, errors.BadEnvelope, errors.BadMessage,
                      errors.InvalidMessage, errors.ReceiptRefused}
    assert all(issubclass(c, errors.RequestError) for c in request_errors)
    # Parsers catch ValueError around int(), json and these alike (edge.admin reads JSON that way).
    assert all(issubclass(c, ValueError) for c in (errors.UnsafeTarget, errors.BadInput, errors.BadEnvelope,
                                                   errors.BadMessage, errors.InvalidMessage, errors.PemError))

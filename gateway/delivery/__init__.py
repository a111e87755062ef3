"""SMS alternate delivery: the message state machine, receipts, the resend from a long code, app callbacks.

    messages.py    the state machine as pure functions: what a receipt or an answer does to a message
    callbacks.py   the app side: callback documents, and their POSTs under the callback-URL rule
    service.py     the flows: accept, send, take a receipt, forward at most once, notify

The upstream side, one MT send through the SMS upstreams, is a dialect of the one forward loop
(`gateway.core.dialects.sms`); the HTTP routes are `gateway.edge.sms_api`.
"""

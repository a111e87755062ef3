"""SMS alternate delivery: the message state machine, receipts, the resend from a long code, app callbacks.

    messages.py    the state machine as pure functions: what a receipt or an answer does to a message
    sender.py      the upstream side: one MT send through the SMS upstreams (failover, DNS, TLS, backoff)
    callbacks.py   the app side: callback documents, and their POSTs under the callback-URL rule
    service.py     the flows: accept, send, take a receipt, forward at most once, notify
    api.py         the HTTP routes: /sms/v1/messages and /sms/v1/receipts
"""

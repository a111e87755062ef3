"""The forward loop's dialects: what one protocol needs from the loop, and how its answers read.

    rest.py    Responsys REST: token sessions, the app's raw target on the account's endPoint
    soap.py    Responsys SOAP: pooled sessions, the envelope rewritten, the WSDL and its documents
    sms.py     the SMS aggregators' MT API: HTTP Basic, one pass over the upstreams per outbox try
"""

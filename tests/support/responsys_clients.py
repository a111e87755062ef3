"""Unmodified third-party Responsys clients, aimed at a base URL (a simulated account or the gateway)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import requests
import zeep
from zeep.transports import Transport

with warnings.catch_warnings():
    # responsysrest 0.1.12 compares with `is 0`, which Python flags with a SyntaxWarning on compile.
    warnings.simplefilter("ignore", SyntaxWarning)
    import responsysrest

ResponsysRestClient = responsysrest.Client
WSDL_PATH = "/webservices/wsdl/ResponsysWS_Level1.wsdl"


@contextlib.contextmanager
def plain_session() -> Iterator[requests.Session]:
    """A requests session (what zeep rides on) that takes no proxy or CA bundle from the environment."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


def zeep_client(base_url: str, session: requests.Session, *, timeout: float = 15.0) -> zeep.Client:
    """The PyPI `zeep` SOAP client on the WSDL at `base_url` (the gateway's or a simulated account's)."""
    return zeep.Client(base_url + WSDL_PATH, transport=Transport(session=session, timeout=timeout,
                                                                 operation_timeout=timeout))


def responsysrest_client(base_url: str, *, user_name: str, password: str) -> ResponsysRestClient:
    """The PyPI `responsysrest` client with its login URL pointed at `base_url`, built in memory.

    Its `login_url` setter ignores its argument and always builds http://login<pod>.responsys.net; the
    value lives in the name-mangled attribute behind the property, which is what an app has to set.
    """
    config = responsysrest.Configuration(
        pod=2, api_version="1.3", api_folder="API", api_list="CONTACTS", profile_extension_table_alias="PET",
        supplemental_table_alias="SUP", primary_key_alias="PK", riid_generator_length=11,
        caste_nonstr_to_str=True, local_content_library_folder="local", remote_content_library_folder="remote",
        test_campaign_name="WELCOME", test_local_content_library_folder="local",
        test_remote_content_library_folder="remote")
    config._Configuration__login_url = f"{base_url}/rest/api/v1.3/auth/token"
    assert config.login_url.startswith(base_url)
    credentials = responsysrest.Credentials(user_name=user_name, password=password, email_address="ops@example.com")
    return responsysrest.Client(config, credentials)


def soap_session_header(session_id: str) -> dict[str, Any]:
    """zeep's `_soapheaders` for a Responsys SOAP call in a session."""
    return {"SessionHeader": {"sessionId": session_id}}


def merge_trigger_email_args(*emails: str) -> dict[str, Any]:
    """Arguments of a SOAP `mergeTriggerEmail` for these addresses, as an app passes them to zeep."""
    return {
        "recordData": {"fieldNames": ["EMAIL_ADDRESS_"], "records": [{"fieldValues": [e]} for e in emails]},
        "mergeRule": {"insertOnNoMatch": True, "updateOnMatch": "REPLACE_ALL", "matchColumnName1": "EMAIL_ADDRESS_",
                      "matchOperator": "NONE", "defaultPermissionStatus": "OPTIN"},
        "campaign": {"folderName": "Campaigns", "objectName": "WELCOME"},
        "triggerData": [{"optionalData": [{"name": "ORDER", "value": "42"}]} for _ in emails],
    }

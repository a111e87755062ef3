"""Unmodified third-party Responsys clients, aimed at a base URL (a simulated account or the gateway)."""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    # responsysrest 0.1.12 compares with `is 0`, which Python flags with a SyntaxWarning on compile.
    warnings.simplefilter("ignore", SyntaxWarning)
    import responsysrest

ResponsysRestClient = responsysrest.Client


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

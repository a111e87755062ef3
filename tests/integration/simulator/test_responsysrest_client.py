"""The unmodified `responsysrest` PyPI client logs in and triggers an email against the simulator."""

from __future__ import annotations

import warnings

from gateway.simulator.server import SimulatedAccount
from tests.integration.simulator.conftest import PASSWORD, USER

with warnings.catch_warnings():
    # responsysrest 0.1.12 compares with `is 0`, which Python flags with a SyntaxWarning on compile.
    warnings.simplefilter("ignore", SyntaxWarning)
    import responsysrest


def _client(account: SimulatedAccount) -> responsysrest.Client:
    config = responsysrest.Configuration(
        pod=2, api_version="1.3", api_folder="API", api_list="CONTACTS", profile_extension_table_alias="PET",
        supplemental_table_alias="SUP", primary_key_alias="PK", riid_generator_length=11,
        caste_nonstr_to_str=True, local_content_library_folder="local", remote_content_library_folder="remote",
        test_campaign_name="WELCOME", test_local_content_library_folder="local",
        test_remote_content_library_folder="remote")
    # The client's `login_url` setter ignores its argument and always builds the vendor's
    # http://login<pod>.responsys.net URL; the attribute behind it is the only way to aim it elsewhere.
    config._Configuration__login_url = f"{account.url}/rest/api/v1.3/auth/token"
    credentials = responsysrest.Credentials(user_name=USER, password=PASSWORD, email_address="ops@example.com")
    return responsysrest.Client(config, credentials)


def test_responsysrest_client_logs_in_and_triggers_an_email(account: SimulatedAccount) -> None:
    client = _client(account)

    result = client.send_email_message(["a@example.com", "b@example.com"], "API", "WELCOME",
                                       optional_data=[{"ORDER": "1"}, {"ORDER": "2"}])

    assert [r["success"] for r in result] == [True, True]
    assert account.stats()["rest_logins"] == 1
    assert [d.recipient for d in account.deliveries()] == ["EMAIL_ADDRESS_:a@example.com",
                                                          "EMAIL_ADDRESS_:b@example.com"]


def test_responsysrest_client_sends_without_optional_data(account: SimulatedAccount) -> None:
    # With no optional data the client sends "optionalData": [{}]; the account accepts it.
    result = _client(account).send_email_message("a@example.com", "API", "WELCOME")

    assert result[0]["success"] is True

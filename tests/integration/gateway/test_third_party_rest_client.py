"""The unmodified `responsysrest` PyPI client, pointed at the gateway instead of Responsys."""

from __future__ import annotations

import warnings

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment, delivered_to

with warnings.catch_warnings():
    # responsysrest 0.1.12 compares with `is 0`, which Python flags with a SyntaxWarning on compile.
    warnings.simplefilter("ignore", SyntaxWarning)
    import responsysrest


def responsysrest_client(deployment: Deployment) -> responsysrest.Client:
    config = responsysrest.Configuration(
        pod=2, api_version="1.3", api_folder="API", api_list="CONTACTS", profile_extension_table_alias="PET",
        supplemental_table_alias="SUP", primary_key_alias="PK", riid_generator_length=11,
        caste_nonstr_to_str=True, local_content_library_folder="local", remote_content_library_folder="remote",
        test_campaign_name="WELCOME", test_local_content_library_folder="local",
        test_remote_content_library_folder="remote")
    # The only change an app makes: its login URL. (The client's `login_url` setter ignores its argument
    # and always builds http://login<pod>.responsys.net, so the attribute behind it is set instead.)
    config._Configuration__login_url = f"{deployment.url}/rest/api/v1.3/auth/token"
    credentials = responsysrest.Credentials(user_name=APP_USER, password=APP_PASSWORD, email_address="ops@example.com")
    return responsysrest.Client(config, credentials)


def test_unmodified_client_sends_through_the_gateway_and_survives_failover(deployment: Deployment) -> None:
    client = responsysrest_client(deployment)
    first = client.send_email_message("lib@example.com", "API", "WELCOME")
    assert first[0]["success"] is True
    assert delivered_to(deployment.primary, "lib@example.com") == 1

    deployment.primary.set_mode("refuse")
    second = client.send_email_message("lib-failover@example.com", "API", "WELCOME")
    assert second[0]["success"] is True
    assert delivered_to(deployment.failover, "lib-failover@example.com") == 1
    assert delivered_to(deployment.primary, "lib-failover@example.com") == 0

"""The official msgraph-sdk and azure-identity against Switchboard over TLS, no credential shim.

The lines that differ from a bot written for Microsoft's service are marked "Switchboard:".
The process trusts the server's certificate through SSL_CERT_FILE and REQUESTS_CA_BUNDLE, which
`switchboard exec` (or the plugin, when it starts the server) sets.
"""
import asyncio

from azure.identity.aio import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.call import Call
from msgraph.generated.models.call_state import CallState
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.identity_set import IdentitySet
from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
from msgraph.generated.models.modality import Modality
from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

from switchboard_testkit import devsetup


def test_the_sdk_creates_a_call_and_reads_it_back(switchboard, bot_receiver):
    async def scenario():
        credential = ClientSecretCredential(
            switchboard.tenant_id, switchboard.app_id, switchboard.client_secret,
            authority=switchboard.https_url,  # Switchboard: the token authority
            disable_instance_discovery=True)  # Switchboard: ask no Microsoft host about it
        auth = AzureIdentityAuthenticationProvider(
            credential, scopes=["https://graph.microsoft.com/.default"],
            allowed_hosts=["127.0.0.1"])  # Switchboard: the token goes only to this host
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = switchboard.https_url + "/v1.0"  # Switchboard: Graph
        client = GraphServiceClient(request_adapter=adapter)
        try:
            call = await client.communications.calls.post(Call(
                callback_uri=bot_receiver.url,
                targets=[InvitationParticipantInfo(
                    identity=IdentitySet(user=Identity(id=devsetup.ALICE)))],
                requested_modalities=[Modality.Audio],
                media_config=ServiceHostedMediaConfig()))
            switchboard.advance(1)  # Alice answers after 1 s
            again = await client.communications.calls.by_call_id(call.id).get()
            return call, again
        finally:
            await credential.close()

    call, again = asyncio.run(scenario())
    assert call.state == CallState.Establishing
    assert again.id == call.id
    assert again.state == CallState.Established
    assert bot_receiver.states(call.id) == ["establishing", "established"]

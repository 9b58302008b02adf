"""A local fake of Microsoft Entra ID's token service for one tenant: the two requests MSAL (under
azure-identity's ClientSecretCredential and EnvironmentCredential) sends for a confidential client.

- `GET /{tenant}/v2.0/.well-known/openid-configuration`: the OpenID Connect discovery document (OpenID
  Connect Discovery 1.0, section 4; MSAL reads `token_endpoint` and `authorization_endpoint` from it). Its
  endpoints are built from the request's Host, so behind `fakes.network.ConnectProxy` they name the real
  host (login.microsoftonline.us) and the token request goes there too.
- `POST /{tenant}/oauth2/v2.0/token`, form-encoded `grant_type=client_credentials`, `client_id`, `scope`,
  and `client_secret` or (Azure Workload Identity) `client_assertion_type` jwt-bearer with the projected
  service account token as `client_assertion`: `{"token_type":"Bearer","expires_in":…,"ext_expires_in":…,"access_token":…}`,
  or 401 `invalid_client` (learn.microsoft.com, "Microsoft identity platform and the OAuth 2.0 client
  credentials flow": the successful response and the error response's fields).

Every token request's `scope` is kept in `scopes`, which is what the sovereign-cloud tests assert on.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fakes.server import Answer, FakeServer, Fault, Request

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class FakeEntraID(FakeServer):
    """One tenant with one client; hands out `token` to it."""

    def __init__(
        self,
        *,
        tls: tuple[str, str] | None = None,  # (certificate, key): MSAL speaks to it over HTTPS only
        tenant: str = "72f988bf-86f1-41af-91ab-2d7cd011db47",
        client_id: str = "6dd0c4e8-0f6b-4d67-9a4b-6d1f2b7c3a10",
        client_secret: str = "client-secret-value",
        token: str = "entra-token",
        federated_token: str = "projected-service-account-token",  # what Workload Identity presents
    ) -> None:
        super().__init__(tls=tls)
        self.tenant, self.client_id, self.client_secret, self.token = tenant, client_id, client_secret, token
        self.federated_token = federated_token
        self.scopes: list[str] = []

    def handle(self, request: Request) -> Answer:
        host = request.headers.get("host", f"127.0.0.1:{self.port}")
        base = f"https://{host.removesuffix(':443')}/{self.tenant}"
        if request.method == "GET" and request.path == f"/{self.tenant}/v2.0/.well-known/openid-configuration":
            return Answer.json(
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                    "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
                    "tenant_region_scope": "NA",
                },
            )
        if request.method == "POST" and request.path == f"/{self.tenant}/oauth2/v2.0/token":
            form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
            with self._lock:
                self.scopes.append(form.get("scope", ""))
            if form.get("grant_type") != "client_credentials":
                return _error(400, "unsupported_grant_type", "AADSTS70003: grant type not supported.")
            if form.get("client_id") != self.client_id:
                return _error(400, "unauthorized_client", "AADSTS700016: Application not found in the directory.")
            assertion = form.get("client_assertion_type") == JWT_BEARER and form.get("client_assertion")
            if assertion and assertion != self.federated_token:
                return _error(401, "invalid_client", "AADSTS700024: Client assertion is not within its valid time range.")
            if not assertion and form.get("client_secret") != self.client_secret:
                return _error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
            return Answer.json(
                200,
                {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": self.token},
            )
        return _error(404, "invalid_request", f"AADSTS900561: no endpoint {request.method} {request.path}")

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        if fault is Fault.AUTH:
            return _error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        return super().fault_answer(fault, request, retry_after)


def _error(status: int, code: str, description: str) -> Answer:
    number = int(description.removeprefix("AADSTS").split(":", 1)[0])
    body: dict[str, Any] = {"error": code, "error_description": description, "error_codes": [number]}
    return Answer.json(status, body)

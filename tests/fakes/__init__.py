"""Fake push providers that speak the real protocols, started by the tests on loopback.

`apns.FakeApns`: APNs over HTTP/2 and TLS (a certificate from `keys.make_pki`), checking the
provider token (ES256 JWT) and the headers. `fcm.FakeFcm`: FCM HTTP v1 and the OAuth2 token
endpoint, checking the signed assertion (RS256) and the bearer token.
"""

"""Push delivery: the worker that sends granted push prompts through APNs and FCM.

Modules, one per noun: `settings` (DeliverySettings and the providers' settings), `payload`
(pure: payloads within the providers' limits), `results` (pure: what a send came to, back-off),
`apns` and `fcm` (the providers), `jobs` (PostgreSQL: claims, leases, deliveries, dead
letters), `worker` (the loop) and `health` (its health service).

Delivery is AT MOST ONCE per (job, device). Exactly once is impossible over a network: a
request whose answer is lost may or may not have been delivered. So a delivery is marked
'sending' (committed) before its request and marked with its result after; a delivery found
still 'sending' later (its worker was killed between the two) or whose request may have reached
the provider without an answer (a timeout or a lost connection after the request was written)
becomes 'unknown': counted, logged at ERROR, and never sent again. Failures that surely
delivered nothing (an error answer, no connection, a stream refused by GOAWAY) are retried.
As a second line of defence, the decision id is the APNs collapse id and the FCM collapse key
and tag, so that a duplicate, if one ever got through, would replace the first on the device.
"""

"""Point the sellers realm's mail settings at an SMTP server (local demo and dev).

Uses the master admin (KC_BOOTSTRAP_ADMIN_USERNAME/PASSWORD, admin/admin for local dev):
the seller-connector client deliberately has no right to change realm settings.

    python deploy/keycloak/configure_smtp.py --keycloak http://127.0.0.1:8180 --host 127.0.0.1 --port 8025
"""

from __future__ import annotations

import argparse
import os

import requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keycloak", default="http://127.0.0.1:8180")
    parser.add_argument("--realm", default="sellers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="8025")
    parser.add_argument("--sender", default="no-reply@seller-connector.example.com")
    args = parser.parse_args()
    token = requests.post(
        f"{args.keycloak}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": os.environ.get("KC_BOOTSTRAP_ADMIN_USERNAME", "admin"),
            "password": os.environ.get("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin"),
        },
        timeout=15,
    )
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    realm_url = f"{args.keycloak}/admin/realms/{args.realm}"
    realm = requests.get(realm_url, headers=headers, timeout=15)
    realm.raise_for_status()
    body = realm.json()
    body["smtpServer"] = {
        "host": args.host,
        "port": str(args.port),
        "from": args.sender,
        "auth": "false",
    }
    requests.put(realm_url, json=body, headers=headers, timeout=15).raise_for_status()
    print(f"Realm {args.realm} sends mail through {args.host}:{args.port}")


if __name__ == "__main__":
    main()

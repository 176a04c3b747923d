# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the S3 client factory (plugins/module_utils/s3_client.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  endpoint_url:
    description:
      - URL of the S3-compatible storage, for example V(https://s3.example.net:9000).
      - Leave out for AWS S3 itself.
      - If not set, the environment variables E(AWS_ENDPOINT_URL_S3), E(AWS_ENDPOINT_URL)
        and E(S3_URL) are read, in that order.
    type: str
    aliases: [s3_url]
  region:
    description:
      - Region of the bucket.
      - If not set, E(AWS_REGION) then E(AWS_DEFAULT_REGION) are read; the default is V(us-east-1).
    type: str
    aliases: [aws_region]
  access_key:
    description:
      - Access key id.
      - If not set, E(AWS_ACCESS_KEY_ID) then E(AWS_ACCESS_KEY) are read; without any, boto3
        looks further (O(profile), instance role).
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - Secret access key. Keep it in Ansible Vault.
      - If not set, E(AWS_SECRET_ACCESS_KEY) then E(AWS_SECRET_KEY) are read.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - Session token for temporary credentials. If not set, E(AWS_SESSION_TOKEN) is read.
    type: str
  profile:
    description:
      - Named profile from the AWS shared configuration files. If not set, E(AWS_PROFILE) is read.
    type: str
  addressing_style:
    description:
      - How the bucket goes into requests. V(path) works with every S3-compatible server;
        V(virtual) puts it in the host name, as AWS prefers.
    type: str
    choices: [path, virtual, auto]
    default: path
  validate_certs:
    description:
      - Check the storage server's TLS certificate. Turn off only for a test server.
    type: bool
    default: true
  ca_bundle:
    description:
      - CA bundle to check the storage server's certificate with (a private CA).
      - If not set, E(AWS_CA_BUNDLE) is read.
    type: path
  max_attempts:
    description:
      - Tries per request. Failed tries are retried with jittered exponential backoff.
    type: int
    default: 5
  connect_timeout:
    description:
      - Seconds to wait for a connection to the storage server.
    type: float
    default: 10.0
  read_timeout:
    description:
      - Seconds to wait for an answer from the storage server.
    type: float
    default: 60.0
  sse:
    description:
      - Server-side encryption of every object written (catalog entries, plans, reports, etcd snapshots).
      - V(AES256) encrypts with keys the storage manages (SSE-S3), V(aws:kms) with a KMS key (SSE-KMS, see
        O(sse_kms_key_id)). Leave out to rely on the bucket's default encryption, if any.
      - Reading needs nothing more, but with V(aws:kms) the readers' credentials need C(kms:Decrypt) on the key.
    type: str
    choices: [AES256, aws:kms]
  sse_kms_key_id:
    description:
      - The KMS key (id, ARN or alias) for O(sse=aws:kms); left out, the account's default key for S3.
    type: str
requirements:
  - boto3 >= 1.35.0
notes:
  - Credentials never appear in task output; keep them in Ansible Vault or the environment.
"""

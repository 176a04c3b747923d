# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options that locate the backup catalog, shared by backup_catalog and backup_catalog_info."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  bucket:
    description:
      - Bucket that holds the catalog.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the catalog in O(bucket). Entries live under
        C(<prefix>/<cluster>/<node>/entries/), the latest pointer at C(<prefix>/<cluster>/<node>/latest.json).
    type: str
    default: catalog
"""

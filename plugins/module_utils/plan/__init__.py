# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration plan of a failed node, one file per concern (nothing is re-exported here).

``vocabulary``   constants (schema, labels and annotations, stages, kinds) and small helpers over objects
``options``      ``PlanOptions`` and ``CustomRef`` (the module's options)
``index``        ``Index``: the backup's objects by reference, kind and namespace
``select``       which of the node's workloads move, and which stay (with the reason)
``share``        the rules of a workload's share: what moves, what stays in the source, and why
``decide``       ``Decider``: each workload's share from the facts, the live source's or the backup's
``live``         ``LiveState``: what the source's API says now; placement and the check-mode capacity estimate
``closure``      what the selected workloads need (RBAC, config, storage, network, custom resources)
``transform``    ``Transformer``: backed-up objects made into manifests for the target
``stages``       ``build_plan``: the plan, its objects in ordered stages, and how to start the workloads
``node_backup``  ``attach_node_backup``: the node backup's data matched to the plan
"""

from __future__ import annotations

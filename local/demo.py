#!/usr/bin/env python3
"""The end of `make demo`: after `mecctl delete --wait`, confirm against the local stack's EC2 and
SSM that the cluster left no instance, security group or parameter behind. Exits non-zero if it
did. Usage: demo.py --leftovers <cluster-id>
"""
import argparse
import sys

from stackclient import leftovers


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leftovers", metavar="CLUSTER_ID", required=True)
    cluster_id = parser.parse_args().leftovers
    live, groups, params = leftovers(cluster_id)
    print(f"left behind by {cluster_id}: {len(live)} instances, {len(groups)} security groups, "
          f"{len(params)} parameters")
    if live or groups or params:
        sys.exit(f"demo: resources left behind: {live} {groups} {params}")
    print("demo finished: nothing left behind")


if __name__ == "__main__":
    main()

"""python -m serving.feature_store {bootstrap,consume}: seed the store, or feed it from a Redis stream.

    python -m serving.feature_store bootstrap --store outputs/serving/feature_store.sqlite \
        --data-dir ../shared/data/ml-100k
    python -m serving.feature_store consume --store redis://127.0.0.1:6379/0

bootstrap prints what it read, loaded and skipped as JSON; it exits 1 when it
loaded no rating.
"""
import argparse
import json
import signal
import sys
import threading
from typing import List, Optional

from serving.feature_store import open_store


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m serving.feature_store', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  seed = commands.add_parser('bootstrap', help='replace the store with MovieLens 100K')
  seed.add_argument('--store', required=True, help='a SQLite file, or redis://host:port/db')
  seed.add_argument('--data-dir', default='', help="a GroupLens ml-100k folder; else found as ExampleGen finds it")
  consume = commands.add_parser('consume', help='apply the events of a Redis stream until SIGTERM')
  consume.add_argument('--store', required=True, help='a SQLite file, or redis://host:port/db')
  consume.add_argument('--redis', default=None, help='the Redis holding the stream; default: --store')
  consume.add_argument('--stream', default=None)
  consume.add_argument('--name', default='consumer-1', help='this consumer within the group')
  args = parser.parse_args(argv)
  with open_store(args.store) as store:
    if args.command == 'bootstrap':
      from serving.feature_store.bootstrap import bootstrap
      report = bootstrap(store, args.data_dir)
      json.dump(report, sys.stdout, indent=2)
      print()
      return 0 if report['loaded']['ratings'] else 1
    import redis
    from serving.feature_store import stream
    consumer = stream.Consumer(store, redis.Redis.from_url(args.redis or args.store), args.name,
                               args.stream or stream.STREAM)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(signum, lambda *_: stop.set())
    consumer.run(stop)
    print(json.dumps(consumer.stats()))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())

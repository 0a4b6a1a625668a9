"""`vjepa2-ros convert droid EPISODE... --out BAG`: raw DROID episodes -> rosbag2 bags.

Every trajectory row becomes one message per topic at its recorded time: the camera image
(raw rgb8 or JPEG), the arm's joint states, the finger joint states (gripper) and the flange
pose. One episode -> the bag at --out; several -> one bag per episode inside --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from vjepa2_ros.data.bags import DISTROS, STORAGES, BagTopics, write_episode_bag
from vjepa2_ros.data.droid import CAMERA_KEYS, find_droid_episodes, read_droid_episode
from vjepa2_ros.data.video import parse_size
from vjepa2_ros.errors import ConfigError, DataError


def convert_droid(episodes: list[Path], out: Path, camera: str = "left", topics: BagTopics = BagTopics(),
                  storage: str = "mcap", compressed: bool = False, distro: str = "jazzy", arm: str = "panda",
                  size: tuple[int, int] | None = None, progress: bool = False,
                  skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Convert episode folders; returns the bag paths written.

    skipped: when given, episodes that fail to read (DataError: missing or damaged files, as
    some released DROID episodes are) are appended here as (folder, reason) and the rest go on.
    """
    if not episodes:
        raise ConfigError("no DROID episodes to convert")
    if len(episodes) == 1:
        targets = [out]
    else:
        names = [ep.name for ep in episodes]
        unique = len(set(names)) == len(names)
        targets = [out / (name if unique else f"{i:04d}_{name}") for i, name in enumerate(names)]
    bags = []
    for folder, target in tqdm(list(zip(episodes, targets)), desc="convert", unit="episode", disable=not progress):
        try:
            episode = read_droid_episode(folder, camera=camera, step_s=None, size=size)
        except DataError as e:
            if skipped is None:
                raise
            skipped.append((folder, str(e)))
            continue
        bags.append(write_episode_bag(target, episode, topics, storage=storage, compressed=compressed,
                                      distro=distro, arm=arm))
    return bags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("episodes", nargs="+", type=Path,
                        help="episode folders, directories holding episodes, or list files (first column)")
    parser.add_argument("--out", type=Path, required=True, help="the bag (one episode) or a folder of bags")
    parser.add_argument("--camera", default="left", help=f"one of {sorted(CAMERA_KEYS)} or a camera serial")
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--distro", choices=DISTROS, default="jazzy", help="message definitions to store")
    parser.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw rgb8")
    parser.add_argument("--arm", choices=("panda", "fr3"), default="panda", help="joint names to write")
    parser.add_argument("--size", default=None, help="resize frames to HEIGHTxWIDTH (default: as recorded; "
                        "DROID's 1280x720 is ~2.8 MB a frame raw: 180x320 keeps bags small)")
    parser.add_argument("--keep-going", action="store_true",
                        help="skip episodes that cannot be read (listed at the end; exit status 1)")
    defaults = BagTopics()
    parser.add_argument("--camera-topic", default=defaults.camera)
    parser.add_argument("--joint-states-topic", default=defaults.joint_states)
    parser.add_argument("--gripper-topic", default=defaults.gripper)
    parser.add_argument("--flange-pose-topic", default=defaults.flange_pose)


def main(args: argparse.Namespace) -> int:
    episodes = [ep for source in args.episodes for ep in find_droid_episodes(source)]
    topics = BagTopics(args.camera_topic, args.joint_states_topic, args.gripper_topic, args.flange_pose_topic)
    skipped: list[tuple[Path, str]] | None = [] if args.keep_going else None
    bags = convert_droid(episodes, args.out, args.camera, topics, args.storage, args.compressed, args.distro,
                         args.arm, parse_size(args.size) if args.size else None, progress=True, skipped=skipped)
    for bag in bags:
        print(bag)
    for folder, reason in skipped or []:
        print(f"skipped {folder}: {reason}", file=sys.stderr)
    return 1 if skipped else 0

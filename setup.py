"""vjepa2_ros: an ament_python ROS 2 package that also installs with plain pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vjepa2_ros"
ROS_WHEELS = ("rclpy[fastrtps]", "std-msgs", "std-srvs", "sensor-msgs", "geometry-msgs", "trajectory-msgs",
              "diagnostic-msgs", "lifecycle-msgs", "rcl-interfaces", "builtin-interfaces", "action-msgs",
              "ament-index-python")

setup(
    name=PACKAGE,
    version="0.1.0",
    description="V-JEPA 2-AC world-model planning for Franka arms, with and without ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["models/*.json", "models/*.safetensors", "config/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.json")),
        (f"share/{PACKAGE}/models/sim_reach", glob("models/sim_reach/*.json") + glob("models/sim_reach/*.safetensors")),
    ],
    install_requires=[
        "torch>=2.3",          # CPU hosts: the set-up script installs torch==2.13.0 first
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "safetensors>=0.4",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=8,<9", "hypothesis>=6.100"],   # <9: Jazzy's launch_testing plugin breaks on pytest 9
        # MuJoCo simulation (the Panda model comes from dm-robotics-panda, installed with --no-deps
        # by scripts/bootstrap.sh because its own dependencies pull dm_control) and franky.
        "sim": ["mujoco>=3.2", "franky-control>=2.0", "franky-sim>=1.0.4"],
        "data": ["rosbags>=0.10", "av>=12", "h5py>=3.10", "matplotlib>=3.8"],
        "train": ["tensorboard>=2.14"],     # optional: training logs CSV without it
        "bench": ["scipy>=1.11"],           # bench plan's reference planner uses scipy per sample, as the notebook
        "gpu": ["onnxruntime-gpu>=1.18"],
        # ROS 2 Jazzy's rclpy and messages as wheels (cp311 only), for a machine without a ROS
        # install: scripts/bootstrap.sh adds this extra when no system rclpy is importable. There
        # are no wheels for control_msgs, launch or launch_ros: their tests skip without them.
        "ros": [f"ros-jazzy-{name}; python_version == '3.11'" for name in ROS_WHEELS],
        "tensorrt": ["tensorrt-cu12>=10"],  # GPU hosts; or use the TensorRT of NVIDIA's containers (docker/)
    },
    entry_points={
        "console_scripts": [
            "vjepa2-ros = vjepa2_ros.cli:main",
            "planner_node = vjepa2_ros.nodes.planner_node:main",
            "sim_station = vjepa2_ros.nodes.sim_station:main",
        ],
    },
    zip_safe=True,
)

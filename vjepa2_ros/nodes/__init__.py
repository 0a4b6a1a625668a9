"""ROS 2 nodes: the only code that imports rclpy (planner_node). The helpers beside it
(parameters, topic_backend) are ROS-free and tested without ROS."""

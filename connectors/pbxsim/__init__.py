"""Protocol-level Asterisk simulator: an AMI server over TCP for tests and the demo."""

from connectors.pbxsim.scenarios import SCENARIOS
from connectors.pbxsim.server import PbxSimulator

__all__ = ["SCENARIOS", "PbxSimulator"]

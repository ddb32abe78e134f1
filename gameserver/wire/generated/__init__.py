"""Generated from proto/ by gameserver.wire.codegen; do not edit."""

"""Generated from proto/ by gameserver.service.codegen; do not edit."""

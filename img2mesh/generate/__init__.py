"""Generate stage: 16 synchronized views with SyncDreamer (optionally HarmonyView guidance)."""

"""Segment stage: validate the photo, remove its background, recentre the object on 256x256 white."""

"""SyncDreamer's 3-D conditioning: the spatial feature volume shared by all views and the per-view frustum volumes.

Module and attribute names follow the official code so that the checkpoint loads 1:1; the
geometry (projection to the feature maps, the frustum grid) reproduces the official conventions:
integer pixel centres, ``align_corners=True`` sampling, depth clamped to 1e-4.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from img2mesh.generate.architecture import SyncDreamerConfig
from img2mesh.generate.precision import float32_region


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


class Image2DResBlockWithTV(nn.Module):
    """2-D residual block conditioned on time and viewpoint embeddings."""

    def __init__(self, dim: int, tdim: int, vdim: int) -> None:
        super().__init__()
        self.time_embed = nn.Conv2d(tdim, dim, 1, 1)
        self.view_embed = nn.Conv2d(vdim, dim, 1, 1)
        self.conv = nn.Sequential(_norm(dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, 1, 1),
                                  _norm(dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x + self.time_embed(t) + self.view_embed(v))


class NoisyTargetViewEncoder(nn.Module):
    """Encodes one noisy view latent into features that are unprojected into the spatial volume."""

    def __init__(self, time_embed_dim: int, viewpoint_dim: int, run_dim: int = 16, output_dim: int = 8) -> None:
        super().__init__()
        self.init_conv = nn.Conv2d(4, run_dim, 3, 1, 1)
        self.out_conv0 = Image2DResBlockWithTV(run_dim, time_embed_dim, viewpoint_dim)
        self.out_conv1 = Image2DResBlockWithTV(run_dim, time_embed_dim, viewpoint_dim)
        self.out_conv2 = Image2DResBlockWithTV(run_dim, time_embed_dim, viewpoint_dim)
        self.final_out = nn.Sequential(_norm(run_dim), nn.SiLU(), nn.Conv2d(run_dim, output_dim, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t = t[:, :, None, None]
        v = v[:, :, None, None]
        x = self.init_conv(x)
        for block in (self.out_conv0, self.out_conv1, self.out_conv2):
            x = block(x, t, v)
        return self.final_out(x)


class SpatialTimeBlock(nn.Module):
    def __init__(self, x_in_dim: int, t_in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_in_dim, x_in_dim, 1, 1)
        self.bn = _norm(x_in_dim)
        self.silu = nn.SiLU()
        self.conv = nn.Conv3d(x_in_dim, out_dim, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.bn(x + self.t_conv(t))))


class SpatialUpTimeBlock(nn.Module):
    def __init__(self, x_in_dim: int, t_in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_in_dim, x_in_dim, 1, 1)
        self.norm = _norm(x_in_dim)
        self.silu = nn.SiLU()
        self.conv = nn.ConvTranspose3d(x_in_dim, out_dim, kernel_size=3, padding=1, output_padding=1, stride=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.norm(x + self.t_conv(t))))


class SpatialTime3DNet(nn.Module):
    """3-D U-Net over the spatial volume, conditioned on time."""

    def __init__(self, time_dim: int, input_dim: int, dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        d0, d1, d2, d3 = dims
        self.init_conv = nn.Conv3d(input_dim, d0, 3, 1, 1)
        self.conv0 = SpatialTimeBlock(d0, time_dim, d0, stride=1)
        self.conv1 = SpatialTimeBlock(d0, time_dim, d1, stride=2)
        self.conv2_0 = SpatialTimeBlock(d1, time_dim, d1, stride=1)
        self.conv2_1 = SpatialTimeBlock(d1, time_dim, d1, stride=1)
        self.conv3 = SpatialTimeBlock(d1, time_dim, d2, stride=2)
        self.conv4_0 = SpatialTimeBlock(d2, time_dim, d2, stride=1)
        self.conv4_1 = SpatialTimeBlock(d2, time_dim, d2, stride=1)
        self.conv5 = SpatialTimeBlock(d2, time_dim, d3, stride=2)
        self.conv6_0 = SpatialTimeBlock(d3, time_dim, d3, stride=1)
        self.conv6_1 = SpatialTimeBlock(d3, time_dim, d3, stride=1)
        self.conv7 = SpatialUpTimeBlock(d3, time_dim, d2)
        self.conv8 = SpatialUpTimeBlock(d2, time_dim, d1)
        self.conv9 = SpatialUpTimeBlock(d1, time_dim, d0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, :, None, None, None]
        conv0 = self.conv0(self.init_conv(x), t)
        conv2 = self.conv2_1(self.conv2_0(self.conv1(conv0, t), t), t)
        conv4 = self.conv4_1(self.conv4_0(self.conv3(conv2, t), t), t)
        x = self.conv6_1(self.conv6_0(self.conv5(conv4, t), t), t)
        x = conv4 + self.conv7(x, t)
        x = conv2 + self.conv8(x, t)
        return conv0 + self.conv9(x, t)


class FrustumTVBlock(nn.Module):
    def __init__(self, x_dim: int, t_dim: int, v_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.v_conv = nn.Conv3d(v_dim, x_dim, 1, 1)
        self.bn = _norm(x_dim)
        self.silu = nn.SiLU()
        self.conv = nn.Conv3d(x_dim, out_dim, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.bn(x + self.t_conv(t) + self.v_conv(v))))


class FrustumTVUpBlock(nn.Module):
    def __init__(self, x_dim: int, t_dim: int, v_dim: int, out_dim: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.v_conv = nn.Conv3d(v_dim, x_dim, 1, 1)
        self.norm = _norm(x_dim)
        self.silu = nn.SiLU()
        self.conv = nn.ConvTranspose3d(x_dim, out_dim, kernel_size=3, padding=1, output_padding=1, stride=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.norm(x + self.t_conv(t) + self.v_conv(v))))


class FrustumTV3DNet(nn.Module):
    """3-D U-Net over one view's frustum volume; returns features at four widths, keyed by width."""

    def __init__(self, in_dim: int, t_dim: int, v_dim: int, dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv0 = nn.Conv3d(in_dim, dims[0], 3, 1, 1)
        self.conv1 = FrustumTVBlock(dims[0], t_dim, v_dim, dims[1], 2)
        self.conv2 = FrustumTVBlock(dims[1], t_dim, v_dim, dims[1], 1)
        self.conv3 = FrustumTVBlock(dims[1], t_dim, v_dim, dims[2], 2)
        self.conv4 = FrustumTVBlock(dims[2], t_dim, v_dim, dims[2], 1)
        self.conv5 = FrustumTVBlock(dims[2], t_dim, v_dim, dims[3], 2)
        self.conv6 = FrustumTVBlock(dims[3], t_dim, v_dim, dims[3], 1)
        self.up0 = FrustumTVUpBlock(dims[3], t_dim, v_dim, dims[2])
        self.up1 = FrustumTVUpBlock(dims[2], t_dim, v_dim, dims[1])
        self.up2 = FrustumTVUpBlock(dims[1], t_dim, v_dim, dims[0])

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        t = t[:, :, None, None, None]
        v = v[:, :, None, None, None]
        width = x.shape[-1]
        x0 = self.conv0(x)
        x1 = self.conv2(self.conv1(x0, t, v), t, v)
        x2 = self.conv4(self.conv3(x1, t, v), t, v)
        x3 = self.conv6(self.conv5(x2, t, v), t, v)
        x2 = self.up0(x3, t, v) + x2
        x1 = self.up1(x2, t, v) + x1
        x0 = self.up2(x1, t, v) + x0
        return {width: x0, width // 2: x1, width // 4: x2, width // 8: x3}


def projection_matrices(Ks: torch.Tensor, poses: torch.Tensor, ratio: float) -> torch.Tensor:
    """4x4 float32 ``[diag(r, r, 1) K [R|t]; 0 0 0 1]`` per camera (K for the 256 image, r = feature/256).

    Always float32, autocast or not: the matrix is inverted, and ``torch.inverse`` has no half-precision
    kernel (under CUDA autocast the matmul would otherwise come out float16).
    """
    with float32_region(Ks.device):
        Ks, poses = Ks.float(), poses.float()
        scale = torch.diag(torch.tensor([ratio, ratio, 1.0], dtype=torch.float32, device=Ks.device))
        proj = scale[None] @ Ks @ poses
        bottom = torch.zeros(proj.shape[0], 1, 4, dtype=torch.float32, device=proj.device)
        bottom[:, :, 3] = 1.0
        return torch.cat([proj, bottom], 1)


def warp_coordinates(points: torch.Tensor, feature_size: int, image_size: int, Ks: torch.Tensor,
                     poses: torch.Tensor) -> torch.Tensor:
    """Project B,3,D,H,W world points into B feature maps; float32 grid_sample coordinates B,D,H,W,2."""
    B, _, D, H, W = points.shape
    with float32_region(points.device):
        proj = projection_matrices(Ks, poses, feature_size / image_size)
        cam = proj[:, :3, :3] @ points.float().reshape(B, 3, D * H * W) + proj[:, :3, 3:]
        depth = cam[:, 2:].clamp(min=1e-4)
        uv = cam[:, :2] / depth
        uv = uv / ((feature_size - 1) / 2) - 1  # align_corners=True: pixel 0 -> -1, pixel size-1 -> 1
        return uv.permute(0, 2, 1).reshape(B, D, H, W, 2)


def frustum_points(depth: int, size: int, image_size: int, poses: torch.Tensor, Ks: torch.Tensor,
                   near: float, far: float) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of a size x size x depth frustum grid per camera (integer pixel centres), float32.

    Returns (B,3,D,H,W points, B,1,D,1,1 depths).
    """
    B = poses.shape[0]
    device, dtype = poses.device, torch.float32
    with float32_region(device):
        depths = torch.linspace(0, 1, steps=depth, device=device, dtype=dtype) * (far - near) + near
        ys, xs = torch.meshgrid(torch.arange(size, device=device, dtype=dtype),
                                torch.arange(size, device=device, dtype=dtype), indexing="ij")
        pixels = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(size * size, device=device, dtype=dtype)])
        rays = pixels[None, :, None, :] * depths[None, None, :, None]  # 1,3,D,HW
        inverse = torch.inverse(projection_matrices(Ks, poses, size / image_size))
        points = inverse[:, :3, :3] @ rays.expand(B, -1, -1, -1).reshape(B, 3, -1) + inverse[:, :3, 3:]
        return points.reshape(B, 3, depth, size, size), depths.view(1, 1, depth, 1, 1).expand(B, -1, -1, -1, -1)


@dataclass(frozen=True)
class CameraGeometry:
    """Everything the volume nets need from the N cameras, float32 (computed once: the cameras are constants).

    ``warp``: N,V,V*V,2 grid_sample coordinates of the volume's vertices in each view's feature map;
    ``frustum``: N,D,h,w,3 each view's frustum grid in the volume's [-1, 1] coordinates;
    ``depths``: 1,1,D,1,1 depths of the frustum slices.
    """

    warp: torch.Tensor
    frustum: torch.Tensor
    depths: torch.Tensor


class SpatialVolumeNet(nn.Module):
    """Builds the spatial volume from all noisy views and samples a frustum volume per target view."""

    def __init__(self, config: SyncDreamerConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.target_encoder = NoisyTargetViewEncoder(c.time_embed_dim, c.viewpoint_dim,
                                                     c.target_encoder_run_dim, c.target_encoder_out_dim)
        self.spatial_volume_feats = SpatialTime3DNet(c.time_embed_dim, c.target_encoder_out_dim * c.view_num,
                                                     c.volume_dims)
        self.frustum_volume_feats = FrustumTV3DNet(c.volume_dims[0], c.time_embed_dim, c.viewpoint_dim,
                                                   c.volume_dims)
        # (poses ref, Ks ref, their versions, CameraGeometry); not a buffer, so casting the module's
        # weights to half precision never touches it
        self._geometry: Optional[tuple] = None

    def volume_vertices(self, batch: int, device: torch.device) -> torch.Tensor:
        """B,3,V,V,V world coordinates (x, y, z) with volume axes (D=z, H=y, W=x)."""
        c = self.config
        line = torch.linspace(-c.spatial_volume_length, c.spatial_volume_length, c.spatial_volume_size,
                              dtype=torch.float32, device=device)
        grid = torch.stack(torch.meshgrid(line, line, line, indexing="ij"), -1)[..., (2, 1, 0)]
        return grid.permute(3, 0, 1, 2)[None].expand(batch, -1, -1, -1, -1)

    def camera_geometry(self, poses: torch.Tensor, Ks: torch.Tensor) -> CameraGeometry:
        """The float32 geometry of these cameras, cached while ``poses`` and ``Ks`` are the same tensors.

        The sampler calls this before it enters the autocast region, so no geometry is ever computed
        in reduced precision; a call with other cameras (other tensors) recomputes.
        """
        cached = self._geometry
        versions = (poses._version, Ks._version)
        if cached is not None and cached[0]() is poses and cached[1]() is Ks and cached[2] == versions:
            return cached[3]
        c = self.config
        N, V = poses.shape[0], c.spatial_volume_size
        with float32_region(poses.device):
            verts = self.volume_vertices(N, poses.device)
            warp = warp_coordinates(verts, c.latent_size, c.image_size, Ks, poses).reshape(N, V, V * V, 2)
            points, depths = frustum_points(c.frustum_volume_depth, c.latent_size, c.image_size, poses, Ks,
                                            c.origin_depth - c.frustum_volume_length,
                                            c.origin_depth + c.frustum_volume_length)
            frustum = (points / c.spatial_volume_length).permute(0, 2, 3, 4, 1).contiguous()
        geometry = CameraGeometry(warp, frustum, depths[:1])
        self._geometry = (weakref.ref(poses), weakref.ref(Ks), versions, geometry)
        return geometry

    def unproject_views(self, x: torch.Tensor, t_embed: torch.Tensor, v_embed: torch.Tensor,
                        poses: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
        """Encode each noisy view and sample it at the volume vertices: B,N*C,V,V,V (view-major)."""
        B, N = x.shape[:2]
        V = self.config.spatial_volume_size
        geometry = self.camera_geometry(poses, Ks)
        features = []
        for view in range(N):
            feats = self.target_encoder(x[:, view], t_embed, v_embed[:, view])
            coords = geometry.warp[view][None].expand(B, -1, -1, -1)
            # float32 sampling: the coordinates must not be rounded to the features' half precision
            sampled = F.grid_sample(feats.float(), coords, mode="bilinear", padding_mode="zeros",
                                    align_corners=True)
            features.append(sampled.reshape(B, -1, V, V, V))
        return torch.stack(features, 1).flatten(1, 2)

    def construct_spatial_volume(self, x: torch.Tensor, t_embed: torch.Tensor, v_embed: torch.Tensor,
                                 poses: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
        """x: B,N,4,h,w noisy latents; t_embed: B,T; v_embed: B,N,4; poses N,3,4; Ks N,3,3."""
        return self.spatial_volume_feats(self.unproject_views(x, t_embed, v_embed, poses, Ks), t_embed)

    def sample_frustums(self, spatial_volume: torch.Tensor, poses: torch.Tensor, Ks: torch.Tensor,
                        target_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The spatial volume resampled (float32) on each target view's frustum grid: B*TN,C,D,h,w and depths."""
        B, TN = target_indices.shape
        geometry = self.camera_geometry(poses, Ks)
        grid = geometry.frustum[target_indices.reshape(-1)]
        volume = spatial_volume.float().unsqueeze(1).expand(-1, TN, -1, -1, -1, -1).flatten(0, 1)
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return sampled, geometry.depths.expand(B * TN, -1, -1, -1, -1)

    def construct_view_frustum_volume(self, spatial_volume: torch.Tensor, t_embed: torch.Tensor,
                                      v_embed: torch.Tensor, poses: torch.Tensor, Ks: torch.Tensor,
                                      target_indices: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Frustum features for target views ``target_indices`` (B,TN): a dict width -> B*TN,C,D,h,w."""
        B, TN = target_indices.shape
        sampled, depths = self.sample_frustums(spatial_volume, poses, Ks, target_indices)
        v = v_embed[torch.arange(B, device=v_embed.device)[:, None], target_indices].reshape(B * TN, -1)
        t = t_embed.unsqueeze(1).expand(-1, TN, -1).reshape(B * TN, -1)
        return self.frustum_volume_feats(sampled, t, v), depths

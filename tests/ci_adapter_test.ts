/**
 * CI must run the WebGPU tests, not skip them: they skip only where no adapter exists at all, so under CI
 * (CI=true, where .ci/run installs Mesa's lavapipe) an adapter must be found.
 */
import assert from "node:assert/strict";
import { preferVulkan } from "../gpu/driver_lifetime.ts";

Deno.test({
  name: "CI finds a WebGPU adapter, so the GPU tests run",
  ignore: !Deno.env.get("CI"),
  async fn() {
    preferVulkan(); // the adapter the backend would use
    const adapter = await navigator.gpu?.requestAdapter();
    assert.ok(adapter, "no WebGPU adapter: install mesa-vulkan-drivers (scripts/setup.sh does)");
  },
});

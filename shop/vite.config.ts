/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// The shop is served by the sync server at `/` (see sync-server/src/http/shop.rs);
// `npm run dev` proxies the API to a server on 127.0.0.1:8080.
export default defineConfig({
  clearScreen: false,
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  server: {
    port: 5174,
    proxy: { "/v1": "http://127.0.0.1:8080", "/pay": "http://127.0.0.1:8080" },
  },
  build: { target: "es2020", outDir: "dist", emptyOutDir: true },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});

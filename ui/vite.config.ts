/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// Tauri's webview is WebKitGTK (Safari-class engine): target it explicitly so
// the bundle never relies on syntax it lacks.
export default defineConfig({
  clearScreen: false,
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  server: { port: 5173, strictPort: true },
  build: { target: "safari15", outDir: "dist", emptyOutDir: true },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
  },
});

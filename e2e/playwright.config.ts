import { defineConfig } from '@playwright/test';

// e2e tests in Debian's chromium (Playwright cannot download a browser here). WebGPU runs on
// SwiftShader, Chromium's CPU Vulkan driver, so the whole suite works on machines without a GPU.
const port = Number(process.env.WEBMOE_E2E_PORT ?? 5199);

export default defineConfig({
  testDir: '.',
  testMatch: '*.spec.ts',
  timeout: 180_000,
  workers: 1,
  retries: 0,
  outputDir: '../test-results/e2e',
  reporter: [['list'], ['json', { outputFile: '../test-results/playwright.json' }]],
  use: {
    baseURL: `http://localhost:${port}`,
    launchOptions: {
      executablePath: process.env.WEBMOE_CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--enable-unsafe-webgpu',
        '--enable-features=Vulkan',
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
    screenshot: 'only-on-failure',
  },
  webServer: {
    command: `npx vite --port ${port} --strictPort`,
    cwd: '..',
    url: `http://localhost:${port}/`,
    reuseExistingServer: false,
    timeout: 60_000,
  },
});

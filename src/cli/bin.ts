#!/usr/bin/env node
// The `webmoe` executable: run the command line and exit with its status.
import { main } from './main.ts';

main(process.argv.slice(2)).then((code) => process.exit(code));
